"""Stage one end to end: decode workers -> batched frozen forward -> shard writer.

Decoding and preprocessing run in DataLoader worker processes while the main process runs the
backbone, so the backbone is the bottleneck. On a CPU the backbone runs in calls of its own
`frames_per_call` frames (whatever `--batch-size` is) with freed memory kept by the allocator, and
the torch threads and decode workers are sized to the cores this process may use. Each rank takes every ``world_size``-th clip of the
dataset and skips those already in a complete shard, so reruns resume and a restart with a
different number of processes neither redoes nor duplicates clips.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from stepcli.cache.failures import append_failure
from stepcli.cache.format import FAILURES, MANIFEST, SHARDS, Manifest
from stepcli.cache.lock import CacheLock
from stepcli.cache.records import DatasetRecord, ExtractionRecord, ViewsRecord
from stepcli.cache.storage import disk_full_stops, make_cache_dir
from stepcli.cache.verify import non_finite_reason
from stepcli.cache.writer import ShardWriter
from stepcli.device import resolve_device
from stepcli.distributed import rank_and_world_size
from stepcli.errors import StepcliError
from stepcli.extract.allocator import keep_freed_memory
from stepcli.extract.budget import TokenBudget
from stepcli.extract.datasets import Clip, DatasetOptions, load_dataset
from stepcli.extract.datasets import Dataset as ClipList
from stepcli.extract.encoders import FrameEncoder, load_backbone
from stepcli.extract.preprocess import Preprocess
from stepcli.extract.size import WontFit, check_disk
from stepcli.extract.video import sample_clip
from stepcli.extract.views import clip_views, views_record
from stepcli.outputs import check_out, quoted
from stepcli.progress import Progress
from stepcli.version import __version__
from stepcli.workers import STALL_SECONDS, Watch, watched_items

log = logging.getLogger(__name__)
SAMPLER = "segment-centre-by-timestamp"
RESUME = "complete shards are kept: rerun the same command to resume"


@dataclass(frozen=True)
class ExtractConfig:
    """The options of `stepcli extract`, each default written here once."""

    dataset: str
    out: Path
    dataset_options: DatasetOptions = field(default_factory=DatasetOptions)
    backbone: str = "openclip:ViT-S-32"
    num_frames: int = 8
    image_size: int = 224
    layer: int = -1
    layers: tuple[int, ...] = ()  # several blocks in one pass (the first is the default); () means `layer`
    clips: int = 1  # temporal clips per clip (test-time views)
    crops: int = 1  # spatial crops: 1 (centre) or 3 (left, centre, right)
    train_views: int = 0  # augmented views per train clip
    augment: str | None = None  # rrc[:min_scale]
    augment_seed: int = 0
    pool: str = "1"  # patch-grid pooling window: K or RxC
    tokens: str = "all"  # or prefix: CLS and registers only
    force: bool = False  # extract even when the projected cache does not fit on the disk
    device: str = "auto"
    batch_size: int = 8  # clips decoded and written together (a CPU backbone call takes its own frames_per_call)
    workers: int | None = None  # decode processes; None: sized to the cores (see `decode_workers`)
    threads: int | None = None  # torch threads; None: torch's own, at most the cores this process may use
    stall_warning: float = STALL_SECONDS  # seconds without a decoded clip before saying what each worker does
    clips_per_shard: int = 64
    rank: int | None = None
    world_size: int | None = None


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
    missing: int = 0  # clips of this process's share not in the cache when it finished: the exit status
    timing: ExtractTiming | None = None

    def report(self, out: Path) -> list[str]:
        """What the user should read when extraction ends: counts, and what is still missing where."""
        rank = f"rank {self.rank}/{self.world_size}: " if self.world_size > 1 else ""
        lines = [
            f"{rank}extracted {self.extracted} clips, {self.skipped} already cached, {self.failed} failed"
            + (f" (reasons in {Path(out) / FAILURES})" if self.failed else "")
            + f"; the cache holds {self.cached} of {self.total} clips; inspect with: stepcli inspect {quoted(out)}"
        ]
        if self.timing is not None and self.extracted:
            lines.append(self.timing.report(self.seconds))
        missing = self.total - self.cached - self.failed
        if self.world_size > 1 and missing > 0:
            lines.append(
                f"note: this process did its share (1/{self.world_size}); up to {missing} clips are the other "
                "ranks'. If they did not run (e.g. sbatch without srun), rerun with any number of processes to finish."
            )
        return lines


@dataclass
class ExtractTiming:
    """Where extraction's time went, and how the backbone ran: what the end of `extract` reports."""

    frames: int = 0  # frames through the backbone (every view)
    decode: float = 0.0  # seconds waiting for decoded clips
    forward: float = 0.0  # seconds in the backbone
    write: float = 0.0  # seconds checking and writing tokens
    frames_per_call: int = 0
    threads: int = 0
    workers: int = 0

    def report(self, seconds: float) -> str:
        return (
            f"throughput {self.frames / max(seconds, 1e-9):.1f} frames/s; of {seconds:.1f} s: waiting for decoding "
            f"{self.decode:.1f} s, backbone {self.forward:.1f} s, writing {self.write:.1f} s "
            f"({self.frames_per_call} frames per backbone call, {self.threads} threads, {self.workers} decode workers)"
        )


def available_cores() -> int:
    """The cores this process may run on (its affinity: a Slurm or taskset share), else all of them."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def decode_workers(device: torch.device, cores: int) -> int:
    """Decode processes when the user names none: on a CPU the backbone needs the cores, so one per
    four, and none below four cores (decoding then runs in turn with the forward, in this process:
    a worker beside torch's threads on two cores cost MobileNetV2 and ViT-S/32 10-20% of their
    extraction rate); beside a GPU every core but the main process's (at least one), up to eight."""
    return min(8, cores // 4) if device.type == "cpu" else max(1, min(8, cores - 1))


@contextmanager
def torch_threads(threads: int):
    """`threads` torch threads while extracting; the caller's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ClipFrames(Dataset):
    """Decodes and preprocesses one clip's views per item; a failure is returned, not raised."""

    def __init__(self, clips: list[Clip], num_frames: int, preprocess: Preprocess, views: ViewsRecord):
        self.clips, self.num_frames, self.preprocess, self.views = clips, num_frames, preprocess, views

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        clip, views = self.clips[i], self.views
        try:
            sampled = sample_clip(clip.path, self.num_frames, clip.start, clip.end, clip.frame_range, views.clips)
            pixels = clip_views(sampled.frames, views, self.preprocess, clip.split, clip.clip_id)
        except Exception as err:  # any decoder error is this clip's failure, not the run's
            return {"clip": clip, "error": str(err).splitlines()[0] if str(err) else type(err).__name__}
        # an augmented view has the frames of its temporal clip: view clips*crops + j is of clip j % clips
        of_clip = [v // views.crops for v in range(views.eval_views)] + [
            j % views.clips for j in range(len(pixels) - views.eval_views)
        ]
        shape = (views.clips, self.num_frames)
        return {
            "clip": clip,
            "pixels": pixels,  # [K, T, 3, S, S]
            "frame_index": sampled.frame_index.reshape(shape)[of_clip],
            "timestamps": sampled.timestamps.reshape(shape)[of_clip],
        }


def build_manifest(cfg: ExtractConfig, encoder: FrameEncoder, dataset: ClipList) -> Manifest:
    import open_clip  # deferred: only their versions are read, for the manifest
    import timm  # deferred: only their versions are read, for the manifest

    views = views_record(cfg.clips, cfg.crops, cfg.train_views, cfg.augment, cfg.augment_seed)
    extraction = ExtractionRecord(
        **encoder.provenance(), num_frames=cfg.num_frames, views=views, sampler=SAMPLER, dtype="float16"
    )
    record = DatasetRecord(
        name=dataset.name,
        class_names=tuple(dataset.class_names),
        pairs=tuple(tuple(p) for p in dataset.pairs),
        splits=tuple(sorted({c.split for c in dataset.clips if c.split})),
        source=dataset.source,
    )
    versions = {"stepcli": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
                "timm": timm.__version__}  # fmt: skip
    versions.update(encoder.versions)  # an optional extra's package, where it made the tokens
    return Manifest(extraction=extraction, dataset=record, versions=versions)


def check_or_write_manifest(out: Path, manifest: Manifest) -> None:
    """Refuse to mix tokens from different configurations, or shard formats, in one cache."""
    if (out / MANIFEST).is_file():
        existing = Manifest.load(out)
        if existing.schema_version != manifest.schema_version:
            raise StepcliError(
                f"{out} is a schema-version-{existing.schema_version} cache; this stepcli writes version "
                f"{manifest.schema_version}: extract into a new --out (the old cache is still read as it is)"
            )
        diff = existing.differences(manifest)
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
        try:
            with h5py.File(shard, "r") as f:
                done.update(x.decode() if isinstance(x, bytes) else x for x in f["clip_id"][:])
        except (OSError, KeyError) as err:
            reason = str(err).splitlines()[0]
            raise StepcliError(f"shard {shard} cannot be read ({reason}); check with `stepcli verify {out}`") from None
    return done


def run_extract(cfg: ExtractConfig) -> ExtractSummary:
    """Extract every clip of this rank's share that is not cached yet; see the module docstring.

    The rank's lock is taken once the annotations are read (bad ones leave no cache directory
    behind) and before anything is written to the cache, so a second process on the same cache and
    rank stops before loading the backbone instead of writing beside this one.
    """
    rank, world_size, local_rank = rank_and_world_size(cfg.rank, cfg.world_size)
    out = check_out(cfg.out, "cache")
    dataset = load_dataset(cfg.dataset, replace(cfg.dataset_options, num_frames=cfg.num_frames))
    created = not out.exists()
    make_cache_dir(out)
    try:
        with CacheLock.acquire(out, rank, world_size), disk_full_stops(out):
            return _extract_locked(cfg, dataset, out, (rank, world_size, local_rank))
    except WontFit:
        if created:  # refused before any work: leave no directory behind (it holds only our lock file)
            shutil.rmtree(out, ignore_errors=True)
        raise


def _extract_locked(cfg: ExtractConfig, dataset: ClipList, out: Path, ranks: tuple[int, int, int]) -> ExtractSummary:
    rank, world_size, local_rank = ranks
    device = resolve_device(cfg.device, local_rank)
    budget = TokenBudget.parse(cfg.pool, cfg.tokens)
    encoder = load_backbone(cfg.backbone, cfg.image_size, cfg.layers or (cfg.layer,), budget).to(device)
    manifest = build_manifest(cfg, encoder, dataset)
    done = clips_in_cache(out) if (out / SHARDS).is_dir() else set()
    check_disk(out, manifest.extraction, [c for c in dataset.clips if c.clip_id not in done], cfg.force)
    check_or_write_manifest(out, manifest)

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
    log.info(
        f"extract: {len(dataset.clips)} clips in {dataset.name}, {summary.skipped} already cached, "
        f"{len(todo)} to do on rank {rank}/{world_size}, backbone {cfg.backbone} on {device}"
    )
    attrs = {"schema_version": manifest.schema_version, "extraction": manifest.extraction.to_dict()}
    cores = available_cores()
    summary.timing = ExtractTiming(
        frames_per_call=encoder.frames_per_call if device.type == "cpu" else 0,
        threads=cfg.threads or min(torch.get_num_threads(), cores),
        workers=decode_workers(device, cores) if cfg.workers is None else cfg.workers,
    )
    keep_freed_memory()
    started = time.perf_counter()
    with ShardWriter(out, rank=rank, world_size=world_size, clips_per_shard=cfg.clips_per_shard, attrs=attrs,
                     layers=manifest.extraction.layers) as writer, torch_threads(summary.timing.threads):  # fmt: skip
        _extract_clips(todo, cfg, manifest.extraction.views, encoder, device, writer, summary)
    summary.seconds = time.perf_counter() - started
    summary.shards = writer.completed
    cached = clips_in_cache(out)
    summary.cached = len(cached)
    share = [c.clip_id for c in dataset.clips[rank::world_size]]
    summary.missing = sum(c not in cached for c in share) + len(dataset.rejected[rank::world_size])
    return summary


def _extract_clips(
    todo: list[Clip], cfg: ExtractConfig, views: ViewsRecord, encoder: FrameEncoder, device: torch.device,
    writer: ShardWriter, summary: ExtractSummary,
) -> None:  # fmt: skip
    """Decode, encode and write `todo`; a clip that fails to decode is recorded and skipped."""
    timing = summary.timing
    with Progress(len(todo), "extract") as progress:
        batches = _batches(todo, cfg, encoder.preprocess, views, timing.workers)
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            timing.decode += time.perf_counter() - waited
            if batch is None:
                break
            good = [item for item in batch if "error" not in item]
            for item in batch:
                if "error" in item:
                    _fail(Path(cfg.out), summary, item["clip"].clip_id, item["clip"].path, item["error"])
            if good:
                started = time.perf_counter()
                with np.errstate(over="ignore"):  # an overflow to inf is this clip's failure, checked below
                    layers = encoder.encode_views([item["pixels"] for item in good], device)
                timing.forward += time.perf_counter() - started
                timing.frames += sum(item["pixels"].shape[0] * item["pixels"].shape[1] for item in good)
                started = time.perf_counter()
                for k, item in enumerate(good):
                    clip = item["clip"]
                    clip_tokens = [tokens[k] for tokens in layers]
                    reason = next(filter(None, map(non_finite_reason, clip_tokens)), None)
                    if reason is not None:
                        _fail(Path(cfg.out), summary, clip.clip_id, clip.path, reason)
                        continue
                    writer.add(clip.clip_id, clip.label, clip.split, clip_tokens, item["frame_index"],
                               item["timestamps"], group=clip.group_key)  # fmt: skip
                    summary.extracted += 1
                timing.write += time.perf_counter() - started
            progress.update(len(batch), failed=summary.failed)


def _batches(clips: list[Clip], cfg: ExtractConfig, preprocess: Preprocess, views: ViewsRecord,
             workers: int) -> Iterator[list[dict]]:  # fmt: skip
    watch = Watch("decoding worker", lambda i: f"clip {clips[i].clip_id} ({clips[i].path})", RESUME, cfg.stall_warning)
    frames = _ClipFrames(clips, cfg.num_frames, preprocess, views)
    batch: list[dict] = []
    for item in watched_items(frames, workers, watch, prefetch=2 * cfg.batch_size if workers else None):
        batch.append(item)
        if len(batch) == cfg.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fail(out: Path, summary: ExtractSummary, clip_id: str, path: str, reason: str) -> None:
    append_failure(out / FAILURES, clip_id, path, reason)
    summary.failed += 1
    summary.failures.append({"clip_id": clip_id, "path": path, "reason": reason})
