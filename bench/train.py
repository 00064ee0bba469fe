"""Why stage two trains from a cache: one probe epoch that runs the backbone vs. one from the cache.

Both epochs train the same probe (fresh, same seed) on the same clips in the same batches. The
backbone epoch decodes each clip (`sample_clip`), preprocesses it, runs the frozen backbone from
the cache manifest under no_grad and then takes the probe step; the cache epoch reads the tokens
and takes the same step, twice over: from memory (what `train-probe --in-memory auto` does when
the cache fits, as the demo's does) and streamed from the HDF5 shards (what it does when not:
in-process on a CPU, by reader processes on a GPU), through the same `iterate_batches` that `train-probe` uses.
Times are measured in one run because the machine is shared and noisy; each cache epoch is
repeated and its median used. By default the epoch is the whole train split.

    python bench/train.py --cache demo-output/cache [--videos CACHE/videos] [--clips N] [--probe step]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stepcli.cache.reader import FeatureCache
from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.encoders import load_backbone
from stepcli.extract.video import sample_clip
from stepcli.probe.data import iterate_batches
from stepcli.probe.models import build_probe_for_cache
from stepcli.probe.training.loop import reader_processes


def make_probe(name: str, cache: FeatureCache, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    probe = build_probe_for_cache(name, cache)
    return probe.train(), probe.optimizer(1e-3, 0.05)


def probe_step(
    probe: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, labels: np.ndarray
) -> None:
    """The step `train-probe` takes: cross-entropy, backward, clipping, AdamW."""
    loss = F.cross_entropy(probe(tokens), torch.from_numpy(labels))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
    optimizer.step()


def video_paths(cache: FeatureCache, videos: Path) -> dict[str, str]:
    """clip id -> video file, from the demo dataset the cache was made from (reused, not regenerated)."""
    dataset = cache.manifest.dataset
    if dataset.name != "demo":
        sys.exit(f"bench/train.py decodes demo clips; {cache.path} holds {dataset.name!r}")
    if not (videos / "demo.json").is_file():
        sys.exit(f"no demo videos in {videos}; pass --videos (extract wrote them to <cache>/videos by default)")
    source = dataset.source
    options = DatasetOptions(root=videos, size=source.get("clips_per_class"), seed=source.get("seed", 0),
                             num_frames=cache.layout.num_frames)  # fmt: skip
    return {clip.clip_id: clip.path for clip in load_dataset("demo", options).clips}


def backbone_epoch(cache, batches, paths, encoder, probe_name, seed) -> dict[str, float]:
    probe, optimizer = make_probe(probe_name, cache, seed)
    T = cache.layout.num_frames
    times = {"decode": 0.0, "backbone": 0.0, "probe": 0.0}
    for rows in batches:
        tick = time.perf_counter()
        pixels = torch.stack([encoder.preprocess(sample_clip(paths[cache.clip_ids[r]], T).frames) for r in rows])
        times["decode"] += time.perf_counter() - tick
        tick = time.perf_counter()
        with torch.no_grad():
            tokens = encoder(pixels.flatten(0, 1))
        tokens = tokens.reshape(len(rows), T, *tokens.shape[1:])
        times["backbone"] += time.perf_counter() - tick
        tick = time.perf_counter()
        probe_step(probe, optimizer, tokens, cache.labels[rows])
        times["probe"] += time.perf_counter() - tick
    return times


def cache_epoch(cache, batches, probe_name, seed) -> dict[str, float]:
    """One epoch from the cache as `train-probe` reads it (`iterate_batches`): from memory after
    `cache.load_into_memory()`, else streamed from the HDF5 shards by its default reader processes."""
    probe, optimizer = make_probe(probe_name, cache, seed)
    workers = 0 if cache.in_memory else reader_processes(torch.device("cpu"))
    times = {"read": 0.0, "probe": 0.0}
    tick = time.perf_counter()
    for tokens, labels in iterate_batches(cache, batches, workers):
        times["read"] += time.perf_counter() - tick  # waiting for the batch
        tick = time.perf_counter()
        probe_step(probe, optimizer, tokens, labels.numpy())
        times["probe"] += time.perf_counter() - tick
        tick = time.perf_counter()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="a demo cache made by `stepcli extract`")
    parser.add_argument("--videos", type=Path, help="its demo videos [CACHE/videos]")
    parser.add_argument("--clips", type=int, help="train clips in the epoch [all]; a subset keeps it short")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--probe", default="step")
    parser.add_argument("--repeats", type=int, default=3, help="cache epochs to take the median of")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cache = FeatureCache(args.cache)
    paths = video_paths(cache, args.videos or args.cache / "videos")
    rows = np.random.default_rng(args.seed).permutation(cache.rows("train"))[: args.clips]
    batches = [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    extraction = cache.manifest.extraction
    encoder = load_backbone(extraction.backbone, extraction.image_size, extraction.layer).eval()
    probe, _ = make_probe(args.probe, cache, args.seed)
    print(
        f"{len(rows)} of {len(cache.rows('train'))} train clips of {cache.path}, batch {args.batch_size}, "
        f"probe {args.probe} ({probe.num_params():,} params), backbone {extraction.backbone} "
        f"{extraction.image_size} px layer {extraction.layer}, T={cache.layout.num_frames}, "
        f"{torch.get_num_threads()} threads"
    )
    cache_epoch(cache, batches[:1], args.probe, args.seed)  # warm-up: allocator, HDF5 handles
    with_backbone = backbone_epoch(cache, batches, paths, encoder, args.probe, args.seed)
    streamed = [cache_epoch(cache, batches, args.probe, args.seed) for _ in range(args.repeats)]
    cache.load_into_memory()
    in_memory = [cache_epoch(cache, batches, args.probe, args.seed) for _ in range(args.repeats)]
    backbone_total = sum(with_backbone.values())
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in with_backbone.items())
    print(f"epoch with backbone (decode + frozen forward + probe step): {backbone_total:.2f} s ({parts})")
    for name, epochs in (("in memory", in_memory), ("streamed from HDF5", streamed)):
        total = statistics.median(sum(t.values()) for t in epochs)
        read = statistics.median(t["read"] for t in epochs)
        print(
            f"epoch from cache, {name} (read + probe step), median of {args.repeats}: {total:.3f} s (read {read:.3f} s)"
        )
        print(f"ratio backbone-epoch / cache-epoch {name} = {backbone_total / total:.1f}")


if __name__ == "__main__":
    main()
