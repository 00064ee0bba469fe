"""Cost of a K-permutation shuffle test relative to one plain evaluation on the same test clips.

    python bench/shuffle.py [--cache CACHE] [--run RUN] [--permutations 20] [--repeats 3]

Without --cache a small demo cache is extracted first (default backbone, --size clips per class);
without --run a STEP probe is trained for one epoch. Both measurements then run in this process,
interleaved and repeated (the minimum of each is kept), so the ratio holds on a shared, noisy
machine. A K-permutation test reads each batch once and runs K + 2 probe forwards (original,
reversed, K shuffles), so the target is <= 25 for K = 20. Every backbone entry point is wrapped
while measuring: the printed count of backbone calls must be 0.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from stepcli.cache.reader import FeatureCache
from stepcli.extract import encoders, pipeline
from stepcli.extract.datasets import DatasetOptions
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.studies.shuffle import ShuffleConfig, shuffle_test
from stepcli.probe.training.loop import TrainConfig, train_probe


class BackboneCalls:
    """Counts `load_backbone` calls and every FrameEncoder forward while active."""

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[tuple[object, str, object]] = []

    def _wrap(self, owner: object, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        self._undo.append((owner, name, original))
        setattr(owner, name, counted)

    def __enter__(self) -> BackboneCalls:
        self._wrap(encoders, "load_backbone")
        self._wrap(pipeline, "load_backbone")
        for cls in (encoders.FrameEncoder, *encoders.FrameEncoder.__subclasses__()):
            self._wrap(cls, "forward")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="Feature cache [a demo cache extracted here].")
    parser.add_argument("--run", type=Path, help="Trained run on that cache [STEP, one epoch, trained here].")
    parser.add_argument("--size", type=int, default=5, help="Demo clips per class when no --cache is given.")
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stepcli-bench-shuffle-"))
    if args.cache is None:
        args.cache = work / "cache"
        options = DatasetOptions(root=work / "videos", size=args.size)
        pipeline.run_extract(pipeline.ExtractConfig(dataset="demo", out=args.cache, dataset_options=options))
    if args.run is None:
        args.run = work / "run"
        train_probe(TrainConfig(cache=args.cache, probe="step", out=args.run, epochs=1))

    with BackboneCalls() as calls:
        run = load_run(args.run)
        cache = FeatureCache(args.cache)
        rows = run.rows(cache, "test")
        cfg = ShuffleConfig(permutations=args.permutations, batch_size=args.batch_size)
        predict_logits(run.probe, cache, rows[: args.batch_size], batch_size=args.batch_size)  # warm-up
        plain, shuffled = [], []
        for _ in range(args.repeats):
            tick = time.perf_counter()
            predict_logits(run.probe, cache, rows, batch_size=args.batch_size)
            plain.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            result = shuffle_test(run, cache, cfg)
            shuffled.append(time.perf_counter() - tick)

    print(f"run {args.run} ({run.config.probe}, {run.probe.num_params():,} params) on cache {args.cache}")
    print(f"test clips {len(rows)}, frames {cache.clip_shape[0]}, tokens per frame {cache.clip_shape[1]}, "
          f"{'in memory' if cache.in_memory else 'streamed from HDF5'}")  # fmt: skip
    print(f"one evaluation (original order)   {min(plain):7.3f} s  (runs: {', '.join(f'{t:.3f}' for t in plain)})")
    print(f"shuffle test, K={args.permutations} (+ orig, rev)  {min(shuffled):7.3f} s  "
          f"(runs: {', '.join(f'{t:.3f}' for t in shuffled)})")  # fmt: skip
    print(f"flip rate (shuffled, mean) {result.shuffled.flip_rate.mean}")
    print(f"backbone calls during measurement = {calls.count}")
    print(
        f"ratio shuffle-test(K={args.permutations}) / one evaluation = {min(shuffled) / min(plain):.2f}  (target <= 25)"
    )


if __name__ == "__main__":
    main()
