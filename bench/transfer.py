"""How decoded frames reach the main process: through shared memory, or through the worker's pipe
(what `stepcli.workers` falls back to when /dev/shm is full or too small).

    python bench/transfer.py [--items 200] [--frames 8] [--image-size 224] [--workers 2]

Each item is one clip's frames, float32 [T, 3, S, S] (4.8 MB at T=8, S=224), made by a worker
that does nothing else, so the figure is the transfer alone: items per second for each path,
measured in child processes, the pipe one under a file-size limit that shared memory cannot pass.
The figures are in the README's Benchmarks section.
"""

from __future__ import annotations

import argparse
import resource
import signal
import subprocess
import sys
import time

import torch
from torch.utils.data import Dataset


class Frames(Dataset):
    def __init__(self, items: int, shape: tuple[int, ...]) -> None:
        self.items, self.shape = items, shape

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int) -> dict:
        return {"pixels": torch.full(self.shape, float(i)).numpy(), "i": i}


def measure(items: int, frames: int, size: int, workers: int) -> float:
    """Items per second through `watched_items` in this process."""
    from stepcli.workers import Watch, watched_items

    start = time.perf_counter()
    for k, item in enumerate(watched_items(Frames(items, (frames, 3, size, size)), workers, Watch("bench worker"))):
        assert float(item["pixels"][0, 0, 0, 0]) == k
    return items / (time.perf_counter() - start)


def child(args: argparse.Namespace, limit: int | None) -> float:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, __file__, "--child", "--items", str(args.items), "--frames", str(args.frames),
               "--image-size", str(args.image_size), "--workers", str(args.workers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, preexec_fn=apply if limit else None)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(measure(args.items, args.frames, args.image_size, args.workers))
        return
    mb = args.frames * 3 * args.image_size**2 * 4 / 2**20
    shm = child(args, None)
    pipe = child(args, 1024 * 1024)  # 1 MiB: no clip's frames fit in a shared-memory file
    print(f"{args.items} items of {mb:.1f} MiB, {args.workers} workers: shared memory {shm:.0f} items/s "
          f"({shm * mb:.0f} MiB/s), pipe {pipe:.0f} items/s ({pipe * mb:.0f} MiB/s), pipe/shm {pipe / shm:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
