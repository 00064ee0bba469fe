"""Extraction throughput relative to the backbone's own forward throughput on the same frames.

    python bench/extract.py [--backbone openclip:ViT-S-32] [--clips-per-class 2] [--batch-size 8]

Both measurements run in this process, one after the other, on the same decoded frames and batch
size, so the ratio is meaningful on a shared, noisy machine. Target: >= 0.85 (the backbone, not
decoding or writing, is the bottleneck).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.encoders import load_backbone
from stepcli.extract.pipeline import ExtractConfig, run_extract
from stepcli.extract.video import sample_clip


def forward_only_seconds(encoder, pixels: list[torch.Tensor], batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        encoder.encode_clips(pixels[i : i + batch_size], torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="openclip:ViT-S-32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clips-per-class", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stepcli-bench-"))
    options = DatasetOptions(root=work / "videos", size=args.clips_per_class, num_frames=args.frames)
    clips = load_dataset("demo", options).clips
    encoder = load_backbone(args.backbone, args.image_size)
    pixels = [encoder.preprocess(sample_clip(c.path, args.frames).frames) for c in clips]
    forward_only_seconds(encoder, pixels[: args.batch_size], args.batch_size)  # warm-up

    forward_times, extract_rates = [], []
    for repeat in range(args.repeats):  # alternate the two, so a change in load hits both alike
        forward_times.append(forward_only_seconds(encoder, pixels, args.batch_size))
        config = ExtractConfig(
            dataset="demo", out=work / f"cache{repeat}", dataset_options=options, backbone=args.backbone,
            num_frames=args.frames, image_size=args.image_size, batch_size=args.batch_size,
            workers=args.workers,
        )  # fmt: skip
        summary = run_extract(config)
        extract_rates.append(summary.extracted / summary.seconds)
    forward_times.append(forward_only_seconds(encoder, pixels, args.batch_size))
    n = len(clips)
    forward_rate = n / float(np.median(forward_times))
    extract_rate = float(np.median(extract_rates))
    print(f"clips {n}, frames per clip {args.frames}, batch {args.batch_size} clips, backbone {args.backbone}")
    print(f"backbone forward only      {forward_rate:7.2f} clips/s  (median of {len(forward_times)})")
    print(f"extract (decode+fwd+write) {extract_rate:7.2f} clips/s  (median of {len(extract_rates)})")
    print(f"ratio extract/forward = {extract_rate / forward_rate:.3f}")


if __name__ == "__main__":
    main()
