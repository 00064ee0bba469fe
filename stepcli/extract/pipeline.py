"""Stage one end to end: decode workers -> batched frozen forward -> shard writer.

Decoding and preprocessing run in DataLoader worker processes while the main process runs the
backbone, so the backbone is the bottleneck. Each rank takes every ``world_size``-th clip of the
dataset and skips those already in a complete shard, so reruns resume and a restart with a
different number of processes neither redoes nor duplicates clips.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stepcli import StepcliError, __version__
from stepcli.cache.failures import append_failure
from stepcli.cache.format import FAILURES, MANIFEST, SHARDS, Manifest, describe_difference
from stepcli.cache.writer import ShardWriter
from stepcli.device import resolve_device
from stepcli.distributed import rank_and_world_size
from stepcli.extract.backbones import FrameEncoder, Preprocess, load_backbone
from stepcli.extract.datasets import Clip, DatasetOptions, load_dataset
from stepcli.extract.video import sample_clip

log = logging.getLogger("stepcli")
SAMPLER = "segment-centre-by-timestamp"


@dataclass
class ExtractConfig:
    dataset: str
    out: Path
    dataset_options: DatasetOptions = field(default_factory=DatasetOptions)
    backbone: str = "openclip:ViT-S-32"
    num_frames: int = 8
    image_size: int = 224
    layer: int = -1
    device: str = "auto"
    batch_size: int = 8  # clips per forward pass (batch_size * num_frames images)
    workers: int = 2
    clips_per_shard: int = 64
    rank: int | None = None
    world_size: int | None = None
    quiet: bool = False


@dataclass
class ExtractSummary:
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    shards: list[Path] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # decode + forward + write, without loading the dataset and model
    rank: int = 0
    world_size: int = 1
    total: int = 0  # clips in the dataset
    cached: int = 0  # clips in the cache when this process finished, from every rank's shards


class _ClipFrames(Dataset):
    """Decodes and preprocesses one clip per item; a failure is returned, not raised."""

    def __init__(self, clips: list[Clip], num_frames: int, preprocess: Preprocess):
        self.clips, self.num_frames, self.preprocess = clips, num_frames, preprocess

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        try:
            sampled = sample_clip(clip.path, self.num_frames, clip.start, clip.end, clip.frame_range)
            pixels = self.preprocess(sampled.frames)
        except Exception as err:  # any decoder error is this clip's failure, not the run's
            return {"clip": clip, "error": str(err).splitlines()[0] if str(err) else type(err).__name__}
        return {
            "clip": clip,
            "pixels": pixels,
            "frame_index": sampled.frame_index,
            "timestamps": sampled.timestamps,
        }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the cores belong to the backbone in the main process


def build_manifest(cfg: ExtractConfig, encoder: FrameEncoder, dataset) -> Manifest:
    import open_clip
    import timm

    extraction = encoder.provenance() | {
        "layer": cfg.layer,
        "num_frames": cfg.num_frames,
        "sampler": SAMPLER,
        "dtype": "float16",
    }
    splits = sorted({c.split for c in dataset.clips if c.split})
    return Manifest(
        extraction=extraction,
        dataset={
            "name": dataset.name,
            "class_names": dataset.class_names,
            "pairs": [list(p) for p in dataset.pairs],
            "splits": splits,
            "source": dataset.source,
        },
        versions={
            "stepcli": __version__,
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "timm": timm.__version__,
        },
    )


def check_or_write_manifest(out: Path, manifest: Manifest) -> None:
    """Refuse to mix tokens from different configurations in one cache."""
    if (out / MANIFEST).is_file():
        old = Manifest.load(out)
        diff = describe_difference(old.extraction, manifest.extraction)
        if old.class_names != manifest.class_names:
            diff.append("class_names differ")
        if diff:
            raise StepcliError(
                f"{out} holds a cache made with another configuration ({'; '.join(diff)}); "
                "use a new --out or the original options"
            )
        return
    manifest.save(out)


def clips_in_cache(out: Path) -> set[str]:
    done: set[str] = set()
    for shard in sorted((out / SHARDS).glob("*.h5")):
        with h5py.File(shard, "r") as f:
            done.update(x.decode() if isinstance(x, bytes) else x for x in f["clip_id"][:])
    return done


def run_extract(cfg: ExtractConfig) -> ExtractSummary:
    rank, world_size, local_rank = rank_and_world_size(cfg.rank, cfg.world_size)
    out = Path(cfg.out)
    options = cfg.dataset_options
    options.num_frames = cfg.num_frames
    dataset = load_dataset(cfg.dataset, options)
    device = resolve_device(cfg.device, local_rank)
    encoder = load_backbone(cfg.backbone, cfg.image_size, cfg.layer).to(device)
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(cfg, encoder, dataset)
    check_or_write_manifest(out, manifest)

    done = clips_in_cache(out)
    summary = ExtractSummary(
        skipped=sum(c.clip_id in done for c in dataset.clips), rank=rank, world_size=world_size,
        total=len(dataset.clips) + len(dataset.rejected),
    )  # fmt: skip
    # partition the full list, then drop what is done: every rank derives the same partition
    # whenever it starts, so ranks never overlap even if one starts after another wrote shards
    todo = [c for c in dataset.clips[rank::world_size] if c.clip_id not in done]
    for k, bad in enumerate(dataset.rejected):
        if k % world_size == rank:
            _fail(out, summary, bad.clip_id, bad.path, bad.reason)
    if not cfg.quiet:
        print(
            f"extract: {len(dataset.clips)} clips in {dataset.name}, {summary.skipped} already cached, "
            f"{len(todo)} to do on rank {rank}/{world_size}, backbone {cfg.backbone} on {device}",
            file=sys.stderr,
        )
    attrs = {"schema_version": manifest.schema_version, "extraction": manifest.extraction}
    with ShardWriter(out, rank=rank, world_size=world_size, clips_per_shard=cfg.clips_per_shard, attrs=attrs) as writer:
        from stepcli.progress import Progress

        started = time.perf_counter()
        with Progress(len(todo), "extract", quiet=cfg.quiet) as progress:
            for batch in _batches(todo, cfg, encoder.preprocess):
                good = [item for item in batch if "error" not in item]
                for item in batch:
                    if "error" in item:
                        _fail(out, summary, item["clip"].clip_id, item["clip"].path, item["error"])
                if good:
                    tokens = _encode(encoder, [item["pixels"] for item in good], device)
                    for item, clip_tokens in zip(good, tokens, strict=True):
                        clip = item["clip"]
                        writer.add(
                            clip.clip_id,
                            clip.label,
                            clip.split,
                            clip_tokens,
                            item["frame_index"],
                            item["timestamps"],
                        )
                        summary.extracted += 1
                progress.update(len(batch), failed=summary.failed)
    summary.seconds = time.perf_counter() - started
    summary.shards = writer.completed
    summary.cached = len(clips_in_cache(out))
    return summary


def _batches(clips: list[Clip], cfg: ExtractConfig, preprocess: Preprocess) -> Iterator[list[dict]]:
    loader = DataLoader(
        _ClipFrames(clips, cfg.num_frames, preprocess),
        batch_size=None,
        num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None,
        prefetch_factor=2 * cfg.batch_size if cfg.workers else None,
    )
    batch: list[dict] = []
    for item in loader:
        batch.append(item)
        if len(batch) == cfg.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(encoder: FrameEncoder, pixels: list[torch.Tensor], device: torch.device) -> np.ndarray:
    """``[B, T, 3, S, S]`` -> ``[B, T, P+N, D]`` float16; fp32 on CPU, bf16/fp16 autocast on GPU."""
    clips = torch.stack(pixels).to(device, non_blocking=True)
    B, T = clips.shape[:2]
    frames = clips.flatten(0, 1)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            tokens = encoder(frames)
    else:
        tokens = encoder(frames)
    return tokens.float().reshape(B, T, *tokens.shape[1:]).cpu().numpy().astype(np.float16)


def _fail(out: Path, summary: ExtractSummary, clip_id: str, path: str, reason: str) -> None:
    append_failure(out / FAILURES, clip_id, path, reason)
    summary.failed += 1
    summary.failures.append({"clip_id": clip_id, "path": path, "reason": reason})
