"""Does every command hold at Something-Something v2's size? A synthetic SSv2 cache, every command timed.

    python bench/scale.py [--clips N] [--out DIR] [--epochs 1] [--permutations 20] [--batch-size 64]

Writes a cache with SSv2's split proportions (168,913 train, 24,777 val, 27,157 test clips; all
220,847 by default, `--clips` scales the three together) and 174 classes through the real shard
writer: T=8 frames of one CLS token and a 2x2 pooled patch grid, D=384, float16 (30 KiB a clip,
about 6.8 GB at full size). Tokens are drawn so that the classes are learnable: each class has its
own direction in the CLS token, except that the first `ORDER_PAIRS` pairs of classes share theirs
and differ only in the direction their patch tokens move over the frames (one class forwards,
the other backwards), so that an order-blind probe confuses each pair and an order-aware one can
tell it apart; these pairs are the cache's nearly-symmetric pairs.

Then each command runs as its own child process (`stepcli ...`, or a one-line Python for opening
the cache and its index); the child's wall time and peak RSS (`os.wait4`: its own and its
children's, the DataLoader workers included) are recorded. Training streams (`--in-memory no`)
unless the row says in memory. The last line printed is one JSON object:
`{"clips": N, "load": [...], "commands": {name: {"wall_s", "per_clip_ms", "peak_rss_mb"}}}`,
per clip being wall time over the cache's clips.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stepcli.cache.format import Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.cache.records import DatasetRecord, ExtractionRecord
from stepcli.cache.writer import ShardWriter

SSV2_SPLITS = {"train": 168_913, "val": 24_777, "test": 27_157}
NUM_CLASSES = 174
ORDER_PAIRS = 20  # classes 0..39: pairs told apart only by the order of their frames
FRAMES, PREFIX, PATCHES, DIM = 8, 1, 4, 384
CLIPS_PER_SHARD = 1024
WRITE_BATCH = 1024  # clips drawn at once
STEPCLI = Path(sys.executable).with_name("stepcli")


@dataclass(frozen=True)
class Measured:
    """One command's cost: wall seconds, wall per cache clip, the child's peak resident memory."""

    wall_s: float
    per_clip_ms: float
    peak_rss_mb: float


def split_sizes(clips: int) -> dict[str, int]:
    """SSv2's three splits scaled to `clips` clips in all (each at least one per class)."""
    total = sum(SSV2_SPLITS.values())
    sizes = {s: max(NUM_CLASSES, round(n * clips / total)) for s, n in SSV2_SPLITS.items()}
    return sizes


def class_names() -> list[str]:
    names = []
    for c in range(NUM_CLASSES):
        if c < 2 * ORDER_PAIRS:
            names.append(f"motion {c // 2} {'forwards' if c % 2 == 0 else 'backwards'}")
        else:
            names.append(f"action {c}")
    return names


def write_cache(out: Path, clips: int, seed: int = 0) -> int:
    """Write the synthetic cache to `out` through `ShardWriter`; returns the clips written."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True) / 2.0  # |mean| = 2, noise 1 per value
    means[1 : 2 * ORDER_PAIRS : 2] = means[0 : 2 * ORDER_PAIRS : 2]  # a pair shares its appearance
    motion = rng.standard_normal((ORDER_PAIRS, DIM)).astype(np.float32)
    motion /= np.linalg.norm(motion, axis=1, keepdims=True) / 3.0
    ramp = np.linspace(-1.0, 1.0, FRAMES, dtype=np.float32)
    sizes = split_sizes(clips)
    splits = np.repeat(list(sizes), list(sizes.values()))
    labels = np.concatenate([rng.permutation(np.arange(n) % NUM_CLASSES) for n in sizes.values()])
    frame_index = np.arange(FRAMES)[None]
    timestamps = frame_index / 12.0
    with ShardWriter(out, clips_per_shard=CLIPS_PER_SHARD) as writer:
        for start in range(0, len(labels), WRITE_BATCH):
            batch = labels[start : start + WRITE_BATCH]
            tokens = rng.standard_normal((len(batch), FRAMES, PREFIX + PATCHES, DIM), dtype=np.float32)
            tokens += means[batch][:, None, None, :]
            moving = np.flatnonzero(batch < 2 * ORDER_PAIRS)
            sign = np.where(batch[moving] % 2 == 0, 1.0, -1.0).astype(np.float32)
            direction = motion[batch[moving] // 2] * sign[:, None]  # [m, D]
            tokens[moving, :, PREFIX:] += ramp[None, :, None, None] * direction[:, None, None, :]
            rows = range(start, start + len(batch))
            writer.add_clips([f"{row:06d}" for row in rows], batch, [str(splits[row]) for row in rows],
                             [tokens[:, None]], frame_index, timestamps)  # fmt: skip
    extraction = ExtractionRecord(
        backbone="synthetic-ssv2", weights="none", image_size=224, mean=(0.0,), std=(1.0,), resize="none",
        normalize="none", layer=-1, num_frames=FRAMES, sampler="uniform", dtype="float16", num_prefix=PREFIX,
        num_patches=PATCHES, dim=DIM, pool="2x2", grid=(4, 4), prefix=("cls",),
    )  # fmt: skip
    names = class_names()
    pairs = tuple((names[2 * p], names[2 * p + 1]) for p in range(ORDER_PAIRS))
    dataset = DatasetRecord("ssv2-synthetic", tuple(names), pairs, ("test", "train", "val"))
    Manifest(extraction=extraction, dataset=dataset).save(out)
    return len(labels)


def measure(command: list[str], clips: int, log: Path) -> Measured:
    """Run `command` as a child process; its wall time and peak RSS (its own and its waited-for
    children's, as `wait4` reports them). A failing command stops the benchmark."""
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        tick = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - tick
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit status {child.returncode}; see {log}")
    return Measured(round(wall, 3), round(1000 * wall / clips, 4), round(usage.ru_maxrss / 1024, 1))


def commands(cache: Path, work: Path, epochs: int, permutations: int, batch_size: int) -> dict[str, list[str]]:
    """Every measured command, by name, in the order they run (later ones use earlier runs)."""
    runs = work / "runs"
    stepcli = [str(STEPCLI), "-q"]

    def train(probe: str, name: str, memory: str = "no") -> list[str]:
        return [*stepcli, "train-probe", "--cache", str(cache), "--probe", probe, "--out", str(runs / name),
                "--epochs", str(epochs), "--batch-size", str(batch_size), "--in-memory", memory, "--device", "cpu"]  # fmt: skip

    step = runs / "step"
    index = "import sys; from stepcli.cache.reader import FeatureCache; print(len(FeatureCache(sys.argv[1])))"
    return {
        "open+index": [sys.executable, "-c", index, str(cache)],
        "inspect": [*stepcli, "inspect", str(cache)],
        "verify": [*stepcli, "verify", str(cache)],
        "train linear": train("linear", "linear"),
        "train logreg": train("logreg", "logreg"),
        "train knn": train("knn", "knn"),
        "train step (streamed)": train("step", "step"),
        "train step (in memory)": train("step", "step-memory", "yes"),
        f"shuffle-test K={permutations}": [
            *stepcli,
            "shuffle-test",
            "--run",
            str(step),
            "--permutations",
            str(permutations),
            "--batch-size",
            "256",
            "--device",
            "cpu",
        ],  # fmt: skip
        "evaluate": [
            *stepcli,
            "evaluate",
            "--run",
            str(step),
            "--cache",
            str(cache),
            "--out",
            str(work / "evaluate"),
            "--batch-size",
            "256",
            "--device",
            "cpu",
        ],  # fmt: skip
        "pairs --from-run": [*stepcli, "pairs", "--from-run", str(step), "--out", str(work / "pairs")],
        "compare": [
            *stepcli,
            "compare",
            "--cache",
            str(cache),
            "--out",
            str(work / "compare"),
            "--probes",
            "linear,logreg,knn,step",
            "--epochs",
            str(epochs),
            "--batch-size",
            str(batch_size),
            "--permutations",
            str(permutations),
            "--in-memory",
            "no",
            "--device",
            "cpu",
        ],  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=sum(SSV2_SPLITS.values()), help="Clips in all [SSv2's].")
    parser.add_argument("--out", type=Path, default=Path("scale-output"), help="Work directory (replaced).")
    parser.add_argument("--epochs", type=int, default=1, help="Epochs per gradient-trained probe.")
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="Clips per training step.")
    parser.add_argument("--only", help="Comma-separated command names to measure (default: all).")
    parser.add_argument("--reuse-cache", action="store_true", help="Keep OUT/cache if it is there (no write row).")
    args = parser.parse_args()
    if args.clips < 3 * NUM_CLASSES:
        sys.exit(f"--clips must be at least {3 * NUM_CLASSES} (one clip per class and split)")
    cache, log = args.out / "cache", args.out / "commands.log"
    results = {}
    if args.reuse_cache and (cache / "manifest.json").is_file():
        for entry in args.out.iterdir():  # every earlier output but the cache
            if entry != cache:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        clips = len(FeatureCache(cache))
        print(f"reusing {cache}: {clips} clips", flush=True)
    else:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        tick = time.perf_counter()
        clips = write_cache(cache, args.clips)
        wall = time.perf_counter() - tick
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        results["write"] = Measured(round(wall, 3), round(1000 * wall / clips, 4), round(peak, 1))
        print(f"wrote {clips} clips in {wall:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in (cache / "shards").glob("*.h5"))
    todo = commands(cache, args.out, args.epochs, args.permutations, args.batch_size)
    only = None if args.only is None else set(args.only.split(","))
    for name, command in todo.items():
        if only is not None and name not in only:
            continue
        results[name] = measure(command, clips, log)
        m = results[name]
        print(f"{name:28s} {m.wall_s:10.2f} s {m.per_clip_ms:10.4f} ms/clip {m.peak_rss_mb:9.1f} MB", flush=True)
    summary = {
        "clips": clips,
        "cache_gib": round(size / 2**30, 3),
        "load": [round(x, 2) for x in os.getloadavg()],
        "epochs": args.epochs,
        "permutations": args.permutations,
        "batch_size": args.batch_size,
        "commands": {name: asdict(m) for name, m in results.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
