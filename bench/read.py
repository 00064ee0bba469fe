"""Can stage two read a streamed cache at disk speed? Shuffled training reads vs. a plain sequential read.

The streamed pass reads every clip of the cache through `FeatureCache` the way `train-probe`
does when the cache is not loaded into memory: the epoch's seeded order (`epoch_order`: one
shuffle, or, for more than `SHUFFLE_GROUP_BYTES` of clips, shuffled in groups that are each read
whole, see `stepcli.cache.staging`) cut into batches of `--batch-size` clips, one view per clip
(`epoch_views`), through `iterate_batches` in-process, one epoch per repeat from one opened
cache, as train-probe's epochs are (the first epoch also allocates the reused buffers). The
reference pass reads the same shard files from start to end with plain `read(4 MiB)` calls, each
into new memory as a reader handing bytes on must; the figure against `readinto` one reused
buffer (memory that stays in the CPU cache: a bound no consumer gets) is printed beside it. Each
ratio is (token bytes / streamed time) / (file bytes / sequential time), measured in one run,
alternating the passes `--repeats` times and taking the median, because the machine is shared
and noisy.

Warm: the files are in the page cache (a first read put them there). Cold: before every pass
each shard file is dropped from the page cache with posix_fadvise(DONTNEED), where the platform
has it (the reader maps nothing, so its open files keep no pages); the kernel may keep pages another process
holds, so the cold figure is a best effort; where util-linux's `fincore` is installed, the script
first prints how much of the shards a drop leaves in the page cache, to show that it works here.

    python bench/read.py --cache demo-output/cache [--batch-size 8] [--repeats 5] [--no-cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from stepcli.cache.reader import FeatureCache
from stepcli.probe.data import epoch_order, epoch_views, iterate_batches

BLOCK = 4 << 20


def drop_from_page_cache(paths: list[Path]) -> bool:
    """Ask the kernel to forget the files' cached pages; False where posix_fadvise is missing."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def resident_bytes(paths: list[Path]) -> int | None:
    """Bytes of the files now in the page cache, as util-linux's `fincore` counts them; None without it."""
    if shutil.which("fincore") is None:
        return None
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *map(str, paths)],
                          capture_output=True, text=True)  # fmt: skip
    return sum(int(x) for x in done.stdout.split()) if done.returncode == 0 else None


def check_drop(paths: list[Path]) -> str:
    """Whether dropping the files from the page cache works here: their resident bytes before and after."""
    sequential_read(paths)
    before = resident_bytes(paths)
    drop_from_page_cache(paths)
    after = resident_bytes(paths)
    if before is None or after is None:
        return "cold: page-cache drop not checked (no fincore)"
    return f"cold: posix_fadvise(DONTNEED) leaves {after / 2**20:.1f} of {before / 2**20:.1f} MiB of the shards in the page cache"


def sequential_read(paths: list[Path], reuse: bool = False) -> float:
    """Bytes per second reading every file whole, in order, in BLOCK-sized reads (into one reused
    buffer when `reuse`)."""
    buffer = bytearray(BLOCK)
    total, start = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            if reuse:
                while read := handle.readinto(buffer):
                    total += read
            else:
                while block := handle.read(BLOCK):
                    total += len(block)
    return total / (time.perf_counter() - start)


def streamed_read(cache: FeatureCache, batch_size: int, epoch: int) -> float:
    """Token bytes per second of one shuffled epoch over every clip, as train-probe streams it."""
    start = time.perf_counter()
    rows = np.arange(len(cache))
    views = epoch_views(cache, rows, seed=0, epoch=epoch)
    drawn = epoch_order(rows, batch_size, seed=0, epoch=epoch, view_bytes=cache.view_nbytes)
    total = 0
    for tokens, _ in iterate_batches(cache, drawn.batches, 0, [views[b] for b in drawn.batches], drawn.groups):
        total += tokens.numel() * tokens.element_size()
    return total / (time.perf_counter() - start)


def ratios(cache_dir: Path, paths: list[Path], batch_size: int, repeats: int, cold: bool) -> list[float]:
    found, cache = [], FeatureCache(cache_dir)  # open across repeats, as across train-probe's epochs
    for repeat in range(repeats):
        if cold:
            drop_from_page_cache(paths)  # the reader maps nothing, so its open files do not keep pages
        plain = sequential_read(paths)
        if cold:
            drop_from_page_cache(paths)
        reused = sequential_read(paths, reuse=True)
        if cold:
            drop_from_page_cache(paths)
        streamed = streamed_read(cache, batch_size, epoch=repeat + 1)
        found.append(streamed / plain)
        print(
            f"  {'cold' if cold else 'warm'} {repeat + 1}: sequential read() {plain / 2**30:.2f} GiB/s "
            f"(readinto one buffer {reused / 2**30:.2f}), streamed shuffled {streamed / 2**30:.2f} GiB/s: "
            f"ratio {streamed / plain:.2f} ({streamed / reused:.2f})"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("demo-output/cache"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="Skip the cold-cache measurement.")
    args = parser.parse_args()
    cache = FeatureCache(args.cache)
    paths = list(cache.shard_paths)
    size = sum(p.stat().st_size for p in paths)
    print(
        f"{args.cache}: {len(cache)} clips, {int(cache.num_views.sum())} views, tokens {cache.clip_shape} float16, "
        f"{len(paths)} shards, {size / 2**20:.1f} MiB; batches of {args.batch_size}, shuffled"
    )
    sequential_read(paths)  # warm the page cache
    warm = statistics.median(ratios(args.cache, paths, args.batch_size, args.repeats, cold=False))
    print(f"warm: streamed shuffled reads / sequential read = {warm:.2f} (median of {args.repeats})")
    if not args.no_cold and drop_from_page_cache(paths):
        print(check_drop(paths))
        cold = statistics.median(ratios(args.cache, paths, args.batch_size, args.repeats, cold=True))
        print(f"cold: streamed shuffled reads / sequential read = {cold:.2f} (median of {args.repeats})")


if __name__ == "__main__":
    main()
