"""Why sweeps train in one pass: K heads in one `train-probe --sweep` vs. K separate `train-probe` runs.

Both train the same K configurations (K learning rates, log-spaced) of one probe on the same
streamed cache (`--in-memory no`: every batch is read from the HDF5 shards, as for a cache that
does not fit in RAM) through the real `train_probe`. The sweep reads each train, val and test
batch once for all heads; the separate runs read everything K times. Printed, measured in one
run, alternating and keeping the fastest of each (the machine is shared and noisy): wall time of
each, their ratio, and the bytes read, both as tokens requested from the cache and as bytes read
by the process (rchar of /proc/self/io, page-cache hits included). A train fraction keeps it
short on a CPU.

    python bench/sweep.py --cache demo-output/cache [--heads 6,20] [--probe step] [--epochs 1]
        [--train-fraction 0.25] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stepcli.cache.reader import FeatureCache
from stepcli.log import set_verbosity
from stepcli.probe.training.config import TrainConfig
from stepcli.probe.training.loop import train_probe


class ReadCounter:
    """Counts clips read through `FeatureCache.tokens` (the one read path of stage two)."""

    def __init__(self) -> None:
        self.clips = 0
        self._tokens = FeatureCache.tokens

    def __enter__(self) -> ReadCounter:
        counter, real = self, self._tokens

        def tokens(cache: FeatureCache, rows, views=None) -> np.ndarray:
            counter.clips += len(rows)
            return real(cache, rows, views)

        FeatureCache.tokens = tokens
        return self

    def __exit__(self, *_) -> None:
        FeatureCache.tokens = self._tokens


def process_read_bytes() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def measure(configs: list[TrainConfig], sweep: dict | None) -> tuple[float, int, int]:
    """Wall time, clips read from the cache and bytes read by the process for the given runs."""
    start, read_before = time.perf_counter(), process_read_bytes()
    with ReadCounter() as counter:
        for cfg in configs:
            train_probe(cfg, sweep=sweep)
    return time.perf_counter() - start, counter.clips, process_read_bytes() - read_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--heads", default="6,20", help="comma-separated K values")
    parser.add_argument("--probe", default="step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-fraction", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements; the fastest of each counts")
    args = parser.parse_args()

    set_verbosity(-1)  # the runs' own progress lines would bury the figures
    cache = FeatureCache(args.cache)
    clip_bytes = int(np.prod(cache.clip_shape)) * 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    base = TrainConfig(cache=args.cache, probe=args.probe, out=scratch / "run", epochs=args.epochs,
                       train_fraction=args.train_fraction, in_memory="no")  # fmt: skip
    print(f"{args.probe} on {cache.path} streamed from HDF5, {args.epochs} epoch(s), train fraction "
          f"{args.train_fraction}, {torch.get_num_threads()} threads, {clip_bytes / 2**20:.2f} MiB per clip")  # fmt: skip
    try:
        train_probe(replace(base, epochs=1, out=scratch / "warm-up"))  # allocator, HDF5 handles, page cache
        for k in (int(v) for v in args.heads.split(",")):
            lrs = [float(f"{lr:.3g}") for lr in np.logspace(-4, -2, k)]
            separate = [replace(base, lr=lr, out=scratch / f"k{k}-lr{i}") for i, lr in enumerate(lrs)]
            # alternate the two and keep each one's fastest: load from other users only ever slows a run down
            runs = [(measure([replace(base, out=scratch / f"k{k}-sweep")], {"lr": lrs}), measure(separate, None))
                    for _ in range(args.repeats)]  # fmt: skip
            one_pass, apart = (min((r[i] for r in runs), key=lambda m: m[0]) for i in (0, 1))
            times = "; ".join(f"{a[0]:.1f} s vs {b[0]:.1f} s" for b, a in runs)
            print(f"K={k}: separate vs one-pass per repeat: {times}")
            print(f"K={k}: one-pass sweep {one_pass[0]:.1f} s, {one_pass[1] * clip_bytes / 2**20:.0f} MiB of tokens "
                  f"({one_pass[2] / 2**20:.0f} MiB read by the process); {k} separate runs {apart[0]:.1f} s, "
                  f"{apart[1] * clip_bytes / 2**20:.0f} MiB of tokens ({apart[2] / 2**20:.0f} MiB read)")  # fmt: skip
            print(f"K={k}: ratio separate / one-pass: wall time {apart[0] / one_pass[0]:.2f}x, "
                  f"tokens read {apart[1] / one_pass[1]:.1f}x")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
