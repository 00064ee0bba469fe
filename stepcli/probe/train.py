"""Training a probe from a feature cache: AdamW, linear warmup then cosine, gradient clipping.

Everything random is seeded (probe init, split, low-data subset, batch order), so on CPU the same
seed and cache give the same metrics.json. The checkpoint kept is the one with the best
validation accuracy (ties: lower validation loss); the reported numbers are on test.

Defaults (12 epochs of batch 8, peak LR 1e-3 after one warmup epoch) are sized for the demo on a
2-core CPU, where they take STEP to 96-99% test top-1 over seeds (8 epochs: 95%, 5: 89%) and
keep `self-attention`, the most expensive probe (a full block over all T*(P+N) tokens), to four
to five minutes. Small batches buy optimizer steps on small datasets; on large ones raise
`--batch-size` (and `--lr` with it) and follow the protocol you compare against (V-JEPA's
attentive probes train for 20 epochs).

Under torchrun the same loop runs in every process with DistributedDataParallel (gloo on CPU,
nccl on GPU); `--batch-size` stays the global batch, so one and W processes take the same steps
and report the same kind of numbers (loss and accuracy summed over all processes).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stepcli import StepcliError
from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.distributed import Group, process_group, processes_per_node, rank_and_world_size
from stepcli.probe import build_probe
from stepcli.probe.data import (
    epoch_batches,
    iterate_batches,
    resolve_splits,
    shard_batch,
    subsample_train,
    use_memory,
)
from stepcli.probe.evaluate import autocast, evaluate
from stepcli.probe.logreg import LOGREG, fit_logreg
from stepcli.probe.run import CONFIG, LOG, Run, cache_record, load_run, save_run
from stepcli.progress import Progress


@dataclass
class TrainConfig:
    """Everything that decides a run; saved resolved in config.json."""

    cache: Path
    probe: str
    out: Path
    epochs: int = 12
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 8
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0
    seed: int = 0
    device: str = "auto"
    shots: int | None = None
    train_fraction: float | None = None
    in_memory: str = "auto"
    workers: int | None = None  # HDF5 reader processes when streaming; None: see `reader_processes`
    probe_options: dict = field(default_factory=dict)
    quiet: bool = False


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor per optimizer step: linear ramp to 1 over `warmup_steps`, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _check(cfg: TrainConfig) -> None:
    problems = [
        f"--epochs must be >= 1, got {cfg.epochs}" if cfg.epochs < 1 else "",
        f"--lr must be > 0, got {cfg.lr}" if not cfg.lr > 0 else "",
        f"--batch-size must be >= 1, got {cfg.batch_size}" if cfg.batch_size < 1 else "",
        f"--weight-decay must be >= 0, got {cfg.weight_decay}" if cfg.weight_decay < 0 else "",
        f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}" if cfg.warmup_epochs < 0 else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise StepcliError("; ".join(problems))
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LOG).exists())):
        raise StepcliError(f"--out {out} exists and is not a stepcli run directory; choose a new --out")


def _say(cfg: TrainConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, file=sys.stderr, flush=True)


def reader_processes(device: torch.device) -> int:
    """HDF5 reader processes for a streamed cache: none when the probe trains on the CPU, whose
    cores the probe already uses (on 2 cores, two readers made a STEP epoch 1.3-1.6x slower than
    reading in-process), else two to keep the GPU fed."""
    return 0 if device.type == "cpu" else min(2, os.cpu_count() or 1)


def train_probe(cfg: TrainConfig, cache: FeatureCache | None = None) -> Run | None:
    """Train (or, for logreg, fit) the probe named in `cfg` and write its run to `cfg.out`.

    `cache`, when given, is `cfg.cache` already opened (and perhaps loaded into memory), so that
    `compare` reads the tokens once for all its probes.

    Under torchrun (or srun with MASTER_ADDR/MASTER_PORT) the processes train one probe together
    with DistributedDataParallel. Rank 0 alone prints and writes the run and returns it; the other
    ranks return None (on several nodes they may not even see rank 0's filesystem).
    """
    _check(cfg)
    _, world_size, local_rank = rank_and_world_size()
    if cfg.probe == LOGREG and world_size > 1:
        raise StepcliError(
            f"--probe logreg is fitted by scikit-learn in one process, not across {world_size}; run it without torchrun"
        )
    device = resolve_device(cfg.device, local_rank)
    with process_group(device) as group:
        return _train(replace(cfg, quiet=cfg.quiet or not group.main), group, cache)


def _train(cfg: TrainConfig, group: Group, cache: FeatureCache | None) -> Run | None:
    """`train_probe` in one process of `group`: all train and evaluate, rank 0 writes and returns the run."""
    device = group.device
    if cache is None or cache.path.resolve() != Path(cfg.cache).resolve():
        cache = FeatureCache(cfg.cache)
    splits = resolve_splits(cache, cfg.seed)
    class_names = cache.class_names
    splits.train = subsample_train(
        splits.train, cache.labels[splits.train], class_names, cfg.seed, cfg.shots, cfg.train_fraction
    )
    in_memory = cache.in_memory or use_memory(cache, cfg.in_memory, copies=processes_per_node(group.world_size))
    if in_memory and not cache.in_memory:
        cache.load_into_memory()
    workers = 0 if in_memory else (reader_processes(device) if cfg.workers is None else cfg.workers)
    out = Path(cfg.out)
    if group.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).unlink(missing_ok=True)  # an interrupted rerun must not look like a finished run
        (out / LOG).write_text("")
    for note in splits.notes:
        _say(cfg, f"note: {note}")
    counts = {s: int(len(splits.rows(s))) for s in ("train", "val", "test")}
    reading = "in memory" if in_memory else "streaming"
    where = f", {group.world_size} processes ({device.type})" if group.world_size > 1 else ""
    _say(cfg, f"train-probe: {cfg.probe} on {cache.path} ({counts}), {reading}{where}")

    start = time.monotonic()
    if cfg.probe == LOGREG:
        probe, extra = fit_logreg(cache, splits.train, splits.val, workers=workers, seed=cfg.seed)
        epoch_times: list[float] = []
        with (out / LOG).open("a") as log:
            log.write(json.dumps({"epoch": 1, **extra}) + "\n")
    else:
        probe, extra, epoch_times = _fit(cfg, cache, splits.train, splits.val, group, workers)
    train_time = time.monotonic() - start
    probe = probe.to(device)
    val = evaluate(probe, cache, splits.val, device=device, workers=workers, group=group)
    test = evaluate(probe, cache, splits.test, device=device, workers=workers, group=group)
    if not group.main:
        return None
    metrics = {
        "probe": probe.name,
        "num_params": probe.num_params(),
        **extra,
        "train_clips": counts["train"],
        **test,
        "val": val,
    }
    resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    resolved.update(device=device.type, in_memory=in_memory, workers=workers, world_size=group.world_size)
    config = {
        "train": resolved,
        "cache": cache_record(cache),
        "splits": {"source": splits.source, "notes": splits.notes, "counts": counts},
    }
    timing = {"train_time_s": round(train_time, 3), "epoch_times_s": [round(t, 3) for t in epoch_times]}
    save_run(out, probe=probe.cpu(), config=config, metrics=metrics, timing=timing, split_ids=splits.clip_ids(cache))
    _say(
        cfg,
        f"{probe.name}: test top-1 {test['top1']:.4f}, mean per-class {test['mean_class_accuracy']:.4f}, "
        f"{metrics['num_params']:,} params, {train_time:.1f}s; run in {out}",
    )
    return load_run(out)


def _fit(
    cfg: TrainConfig, cache: FeatureCache, train: np.ndarray, val: np.ndarray, group: Group, workers: int
) -> tuple[nn.Module, dict, list[float]]:
    """The gradient-descent loop; returns the best-on-val probe, its epoch and per-epoch times.

    `--batch-size` is the global batch: with W processes each step's batch is split across them
    (`shard_batch`), so the steps, the LR schedule and each step's gradient are those of one process.
    """
    device = group.device
    T, _, D = cache.clip_shape
    layout = cache.manifest.token_layout
    torch.manual_seed(cfg.seed)
    probe = build_probe(
        cfg.probe,
        dim=D,
        num_classes=len(cache.class_names),
        num_frames=T,
        num_prefix=layout["num_prefix"],
        num_patches=layout["num_patches"],
        **cfg.probe_options,
    ).to(device)
    model = probe
    if group.world_size > 1:
        model = DistributedDataParallel(probe, device_ids=[device.index] if device.type == "cuda" else None)
        # one clip on a rank makes step's cls-token gradient a strided slice, which DDP copies and
        # reports on every rank; the copy is of D floats and the numbers are right
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    _say(cfg, f"{probe.name}: {probe.num_params():,} trainable parameters")
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    optimizer = probe.optimizer(cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    best_key, best_state, best_epoch, epoch_times = None, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        tick = time.monotonic()
        model.train()
        loss_sum, correct, seen = 0.0, 0.0, 0
        batches = epoch_batches(train, cfg.batch_size, cfg.seed, epoch)  # the same on every rank
        shards = [shard_batch(batch, group.rank, group.world_size) for batch in batches]
        with Progress(len(train), f"epoch {epoch}/{cfg.epochs}", quiet=cfg.quiet) as bar:
            loaded = iterate_batches(cache, [rows for rows, _ in shards], workers)
            for batch, (_, weights), (tokens, labels) in zip(batches, shards, loaded, strict=True):
                tokens, labels = tokens.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                weights = torch.from_numpy(weights).to(device)
                with autocast(device):
                    logits = model(tokens)
                losses = F.cross_entropy(logits.float(), labels, reduction="none") * weights
                # DDP averages gradients over the W processes; scaling each one's loss sum by
                # W / (global batch) makes that average the gradient of the global batch's mean loss
                loss = losses.sum() * (group.world_size / len(batch))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(probe.parameters(), cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                hits = ((logits.argmax(1) == labels).float() * weights).sum()
                step_loss, step_correct = group.sum([losses.sum().item(), hits.item()])
                loss_sum, correct, seen = loss_sum + step_loss, correct + step_correct, seen + len(batch)
                bar.update(len(batch), loss=loss_sum / seen, acc=correct / seen)
        epoch_times.append(time.monotonic() - tick)
        metrics = evaluate(probe, cache, val, device=device, workers=workers, group=group)
        record = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": round(loss_sum / seen, 6),
            "train_top1": round(correct / seen, 6),
            "val_loss": metrics["loss"],
            "val_top1": metrics["top1"],
            "val_mean_class_accuracy": metrics["mean_class_accuracy"],
            "epoch_time_s": round(epoch_times[-1], 3),
        }
        if group.main:
            with (Path(cfg.out) / LOG).open("a") as log:
                log.write(json.dumps(record) + "\n")
        _say(cfg, "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        # every rank evaluated the same gathered logits, so every rank keeps the same checkpoint
        key = (metrics["top1"], -metrics["loss"])
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(probe.state_dict())
    probe.load_state_dict(best_state)
    return probe.eval(), {"best_epoch": best_epoch, "epochs": cfg.epochs}, epoch_times
