"""The checks only a GPU can answer, in one short run and one table (see bench/device.sh).

1. extraction throughput against the backbone's forward alone, with `--workers` at the core count;
2. autocast (bf16) tokens against fp32 tokens of the same frames: mean and worst cosine;
3. one streamed STEP epoch (`--in-memory no`, reader processes);
4. a 20-head stacked sweep against 20 separate runs (and 3 stacked seeds against 3 runs);
5. DDP with nccl in one process (torchrun --nproc_per_node=1): the run finishes, with the numbers
   of the run without torchrun.

`--device cpu` runs the same steps on a CPU with tiny sizes, to check the script itself.

    python bench/device.py [--device cuda] [--clips-per-class 8] [--out /tmp/device-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stepcli.cache.reader import FeatureCache
from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.encoders import load_backbone
from stepcli.extract.pipeline import ExtractConfig, run_extract
from stepcli.extract.video import sample_clip
from stepcli.log import set_verbosity
from stepcli.probe.config import TrainConfig, default_batch_size
from stepcli.probe.studies.seeds import seed_runs
from stepcli.probe.training.loop import train_probe

BACKBONE = "openclip:ViT-S-32"


def timed(run) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def extraction(args, work: Path, rows: list) -> Path:
    """Rows 1-2; returns the cache it extracted."""
    device = torch.device(args.device)
    options = DatasetOptions(root=work / "videos", size=args.clips_per_class)
    clips = load_dataset("demo", options).clips
    encoder = load_backbone(BACKBONE, 224).to(device)
    pixels = [encoder.preprocess(sample_clip(c.path, 8).frames) for c in clips]
    batch = 32 if device.type == "cuda" else 4
    encoder.encode_clips(pixels[:batch], device)  # warm-up
    forward, _ = timed(
        lambda: [encoder.encode_clips(pixels[i : i + batch], device) for i in range(0, len(pixels), batch)]
    )
    cfg = ExtractConfig(dataset="demo", out=work / "cache", dataset_options=options, backbone=BACKBONE,
                        device=args.device, batch_size=batch, workers=os.cpu_count() or 1)  # fmt: skip
    extract, summary = timed(lambda: run_extract(cfg))
    n = len(clips)
    rows.append(("backbone forward only", f"{n / forward:.1f} clips/s", f"batch {batch}, {n} clips"))
    rows.append(("extract (decode + forward + write)", f"{summary.extracted / extract:.1f} clips/s",
                 f"workers {cfg.workers}; ratio to forward {summary.extracted / extract / (n / forward):.2f}"))  # fmt: skip
    frames = torch.cat(pixels[:batch]).to(device)  # [B * T, 3, S, S]
    with torch.no_grad():
        reference = encoder.forward_layers(frames)[0].float()  # fp32, no autocast
    autocast = torch.from_numpy(np.concatenate(encoder.encode_views([p[None] for p in pixels[:batch]], device)[0]))
    exact = encoder.budget.apply(reference, encoder.num_prefix, encoder.grid).cpu()
    cos = torch.nn.functional.cosine_similarity(autocast.float().reshape(exact.shape), exact, dim=-1)
    rows.append(("autocast vs fp32 tokens (cosine)", f"mean {cos.mean():.5f}", f"worst {cos.min():.5f}"))
    return work / "cache"


def training(args, cache: Path, work: Path, rows: list) -> None:
    """Rows 3-5."""
    batch = default_batch_size(args.device)
    base = TrainConfig(cache=cache, probe="step", out=work / "run", epochs=1, device=args.device, batch_size=batch,
                       train_fraction=args.train_fraction)  # fmt: skip
    seconds, run = timed(lambda: train_probe(replace(base, in_memory="no", out=work / "streamed")))
    rows.append(("streamed STEP epoch (train + val + test)", f"{seconds:.1f} s",
                 f"batch {batch}, workers {run.config.runtime.workers}, epoch {run.timing['epoch_times_s'][0]:.1f} s"))  # fmt: skip
    lrs = [float(f"{lr:.3g}") for lr in np.logspace(-4, -2, args.heads)]
    stacked, _ = timed(lambda: train_probe(replace(base, out=work / "sweep"), sweep={"lr": lrs}))
    separate, _ = timed(lambda: [train_probe(replace(base, lr=lr, out=work / f"lr{i}")) for i, lr in enumerate(lrs)])
    rows.append((f"{args.heads}-head stacked sweep vs {args.heads} runs", f"{separate / stacked:.2f}x",
                 f"{stacked:.1f} s vs {separate:.1f} s"))  # fmt: skip
    cfgs = [replace(base, seed=s, out=work / f"seed-{s}") for s in range(3)]
    stacked, _ = timed(lambda: seed_runs(cfgs, FeatureCache(cache)))
    separate, _ = timed(lambda: [train_probe(replace(c, out=work / f"apart-{c.seed}")) for c in cfgs])
    rows.append(("3 stacked seeds vs 3 runs", f"{separate / stacked:.2f}x", f"{stacked:.1f} s vs {separate:.1f} s"))
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node=1", "-m", "stepcli", "train-probe", "--cache", str(cache),
               "--probe", "step", "--epochs", "1", "--device", args.device, "--batch-size", str(batch),
               "--out", str(work / "ddp"), "--quiet"]  # fmt: skip
    if args.train_fraction:
        command += ["--train-fraction", str(args.train_fraction)]
    seconds, done = timed(lambda: subprocess.run(command, capture_output=True, text=True, timeout=240))
    if done.returncode != 0:
        rows.append(("DDP, 1 process (torchrun)", "FAILED", (done.stderr.strip().splitlines() or ["?"])[-1][:100]))
        return
    one = train_probe(replace(base, out=work / "plain")).metrics
    ddp = json.loads((work / "ddp" / "metrics.json").read_text())
    backend = "nccl" if args.device == "cuda" else "gloo"
    rows.append((f"DDP, 1 process (torchrun, {backend})", f"{seconds:.1f} s",
                 f"test top-1 {ddp['top1']:.4f} vs {one['top1']:.4f} without torchrun"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips-per-class", type=int, default=8)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/device-bench"))
    parser.add_argument("--cache", type=Path, help="train on this cache and skip rows 1-2 (a check of the script)")
    parser.add_argument("--train-fraction", type=float)
    args = parser.parse_args()
    set_verbosity(-1)
    rows: list[tuple[str, str, str]] = []
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    try:
        cache = args.cache or extraction(args, args.out, rows)
        training(args, cache, args.out, rows)
    finally:
        width = max((len(r[0]) for r in rows), default=10)
        print(f"device: {name}, {os.cpu_count()} cores, torch {torch.__version__}")
        for what, value, detail in rows:
            print(f"| {what:<{width}} | {value:>18} | {detail} |")


if __name__ == "__main__":
    main()
