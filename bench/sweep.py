"""Stacked heads vs separate runs: K-head sweeps and seeds in one pass against K runs of `train-probe`.

For each cache, probe and K, a sweep of K learning rates (log-spaced) trained by one
`train-probe --sweep` (its heads stacked into one model) against K separate `train-probe` runs,
and 3 seeds of `--seeds` (stacked, each with its own batch order) against 3 separate runs. Both
go through the real training code on the same cache, streamed from HDF5 (`--in-memory no`, as
for a cache that does not fit in RAM) unless `--in-memory yes`. The two are measured
alternately and the fastest of each is kept: load from other users only ever slows a run down.
Then the operator calls of one optimizer step (forward, backward, clipping, AdamW; counted
with torch.profiler on the CPU) of one head and of K stacked heads. A train fraction keeps it
short on a CPU. Printed in one run, with the load average.

    python bench/sweep.py --cache demo-output/cache [--cache full-token/cache] [--probes step,attentive]
        [--heads 6,20] [--seeds 3] [--epochs 1] [--train-fraction 0.25] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from stepcli.cache.reader import FeatureCache
from stepcli.distributed import Group
from stepcli.log import set_verbosity
from stepcli.probe.config import TrainConfig
from stepcli.probe.models import build_probe_for_cache
from stepcli.probe.studies.seeds import seed_runs
from stepcli.probe.training.loop import train_probe
from stepcli.probe.training.optimizer import Head
from stepcli.probe.training.stacked import StackedHeads


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def alternate(first: Callable[[], None], second: Callable[[], None], repeats: int) -> tuple[list, list]:
    """Wall times of `first` and `second`, run alternately `repeats` times each."""
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for i, run in enumerate((first, second)):
            start = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - start)
    return times


def report(what: str, stacked: list[float], separate: list[float]) -> None:
    pairs = "; ".join(f"{s:.1f} s vs {a:.1f} s" for s, a in zip(stacked, separate, strict=True))
    print(f"  {what}: stacked vs separate per repeat: {pairs}; best {min(stacked):.1f} s vs {min(separate):.1f} s "
          f"-> separate / stacked {min(separate) / min(stacked):.2f}x ({load()})", flush=True)  # fmt: skip


def operator_calls(step: Callable[[], object]) -> int:
    """aten operator calls (nested ones included) of one call of `step`, after a warm-up call."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for event in prof.events() if event.name.startswith("aten::"))


def step_calls(cache: FeatureCache, probe: str, k: int) -> tuple[int, int]:
    """Operator calls of one optimizer step: one head (`Head.step`) and K stacked heads."""
    rows = np.flatnonzero(cache.splits == "train")[:8]
    tokens, labels = torch.from_numpy(cache.tokens(rows)).float(), torch.from_numpy(cache.labels[rows])
    weights = torch.ones(len(rows))
    cfg = TrainConfig(cache=cache.path, probe=probe, out=Path("-"), epochs=100)
    one = Head({}, cfg, build_probe_for_cache(probe, cache))
    one.prepare(Group(), 400)
    heads = [Head({}, replace(cfg, lr=1e-4 * (i + 1)), build_probe_for_cache(probe, cache)) for i in range(k)]
    stacked = StackedHeads(heads, torch.device("cpu"), 400)
    return (
        operator_calls(lambda: one.step(Group(), tokens, labels, weights, len(rows))),
        operator_calls(lambda: stacked.step(tokens, labels, weights, len(rows)).tolist()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--probes", default="step,attentive")
    parser.add_argument("--heads", default="6,20", help="comma-separated K values (empty: seeds only)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the first probe (0: none)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-fraction", type=float, default=0.25)
    parser.add_argument("--in-memory", choices=["yes", "no"], default="no")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements; the fastest of each counts")
    args = parser.parse_args()

    set_verbosity(-1)  # the runs' own progress lines would bury the figures
    probes, ks = args.probes.split(","), [int(v) for v in args.heads.split(",") if v]
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, {load()}; epochs {args.epochs}, train fraction "
          f"{args.train_fraction}, in memory {args.in_memory}, repeats {args.repeats}", flush=True)  # fmt: skip
    try:
        for cache_path in args.cache:
            cache = FeatureCache(cache_path)
            print(f"{cache.path}: tokens [T, P+N, D] = {list(cache.clip_shape)}", flush=True)
            base = TrainConfig(cache=cache_path, probe=probes[0], out=scratch / "run", epochs=args.epochs,
                               train_fraction=args.train_fraction, in_memory=args.in_memory)  # fmt: skip
            train_probe(replace(base, out=scratch / "warm-up"))  # allocator, HDF5 handles, page cache
            for probe in probes:
                for k in ks:
                    lrs = [float(f"{lr:.3g}") for lr in np.logspace(-4, -2, k)]
                    cfg = replace(base, probe=probe)
                    stacked, separate = alternate(
                        lambda cfg=cfg, lrs=lrs, k=k: train_probe(replace(cfg, out=scratch / f"{k}-sweep"), sweep={"lr": lrs}),
                        lambda cfg=cfg, lrs=lrs, k=k: [train_probe(replace(cfg, lr=lr, out=scratch / f"{k}-{i}")) for i, lr in enumerate(lrs)],
                        args.repeats,
                    )  # fmt: skip
                    report(f"{probe}, K={k} lrs", stacked, separate)
            if args.seeds:
                cfg, seeds = replace(base, probe=probes[0]), list(range(args.seeds))
                cfgs = [replace(cfg, seed=s, out=scratch / f"seed-{s}") for s in seeds]
                stacked, separate = alternate(
                    lambda cfgs=cfgs, cache=cache: seed_runs(cfgs, cache),
                    lambda cfgs=cfgs: [train_probe(c) for c in cfgs],
                    args.repeats,
                )
                report(f"{probes[0]}, {len(seeds)} seeds", stacked, separate)
            for probe in probes:
                for k in ks:
                    one, many = step_calls(cache, probe, k)
                    print(f"  {probe}: operator calls per optimizer step: 1 head {one}, {k} stacked heads {many} "
                          f"({many / one:.2f}x)", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
