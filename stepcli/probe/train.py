"""Training a probe from a feature cache: AdamW, linear warmup then cosine, gradient clipping.

Everything random is seeded (probe init, split, low-data subset, batch order), so on CPU the same
seed and cache give the same metrics.json. The checkpoint kept is the one with the best
validation accuracy (ties: lower validation loss); the reported numbers are on test. A probe with
a `fit` hook (logreg) is fitted by it instead of the gradient loop.

Under torchrun the same loop runs in every process with DistributedDataParallel (gloo on CPU,
nccl on GPU); `--batch-size` stays the global batch, so one and W processes take the same steps
and report the same kind of numbers (loss and accuracy summed over all processes).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stepcli import StepcliError, __version__
from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.distributed import Group, process_group, processes_per_node, rank_and_world_size
from stepcli.probe import Probe, build_probe_for_cache, probe_class
from stepcli.probe.config import RunConfig, Runtime, SplitRecord, TrainConfig
from stepcli.probe.data import (
    Splits,
    epoch_batches,
    epoch_views,
    iterate_batches,
    resolve_splits,
    shard_batch,
    subsample_train,
    use_memory,
)
from stepcli.probe.evaluate import autocast, evaluate
from stepcli.probe.run import CONFIG, LOG, Run, cache_ref, load_run, save_run
from stepcli.progress import Progress

log = logging.getLogger(__name__)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimizer step: linear ramp to 1 over `warmup_steps`, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def check_config(cfg: TrainConfig) -> None:
    """Every problem with the options in one line, before anything is read or written."""
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
    probe_class(cfg.probe)
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LOG).exists())):
        raise StepcliError(f"--out {out} exists and is not a stepcli run directory; choose a new --out")


def reader_processes(device: torch.device) -> int:
    """HDF5 reader processes for a streamed cache: none when the probe trains on the CPU, whose
    cores the probe already uses (reading in-process is faster there), else two to keep the GPU fed."""
    return 0 if device.type == "cpu" else min(2, os.cpu_count() or 1)


@dataclass
class _Session:
    """One process's share of a training run: its group, data, reading mode and output."""

    cfg: TrainConfig
    group: Group
    cache: FeatureCache
    splits: Splits
    runtime: Runtime

    def say(self, message: str) -> None:
        if self.group.main:
            log.info(message)

    def evaluate(self, probe: nn.Module, rows: np.ndarray) -> dict:
        return evaluate(
            probe, self.cache, rows, device=self.group.device, workers=self.runtime.workers, group=self.group
        )


def train_probe(cfg: TrainConfig, cache: FeatureCache | None = None) -> Run | None:
    """Train (or fit) the probe named in `cfg` and write its run to `cfg.out`.

    `cache`, when given, is `cfg.cache` already opened (and perhaps loaded into memory), so that
    `compare` reads the tokens once for all its probes.

    Under torchrun (or srun with MASTER_ADDR/MASTER_PORT) the processes train one probe together
    with DistributedDataParallel. Rank 0 alone logs and writes the run and returns it; the other
    ranks return None (on several nodes they may not even see rank 0's filesystem).
    """
    check_config(cfg)
    _, world_size, local_rank = rank_and_world_size()
    if not probe_class(cfg.probe).distributed and world_size > 1:
        raise StepcliError(
            f"--probe {cfg.probe} is fitted in one process, not across {world_size}; run it without torchrun"
        )
    device = resolve_device(cfg.device, local_rank)
    with process_group(device) as group:
        return _train(_open_session(cfg, group, cache))


def _open_session(cfg: TrainConfig, group: Group, cache: FeatureCache | None) -> _Session:
    """Open the cache, resolve the splits and whether to read from memory, prepare `cfg.out`."""
    if cache is None or cache.path.resolve() != Path(cfg.cache).resolve() or cfg.layer not in (None, cache.layer):
        cache = FeatureCache(cfg.cache, layer=cfg.layer)
    probe_class(cfg.probe).check_layout(cache.layout)
    splits = resolve_splits(cache, cfg.seed)
    splits.train = subsample_train(
        splits.train, cache.labels[splits.train], cache.class_names, cfg.seed, cfg.shots, cfg.train_fraction
    )
    in_memory = cache.in_memory or use_memory(cache, cfg.in_memory, copies=processes_per_node(group.world_size))
    if in_memory and not cache.in_memory:
        cache.load_into_memory()
    workers = 0 if in_memory else (reader_processes(group.device) if cfg.workers is None else cfg.workers)
    runtime = Runtime(group.device.type, in_memory, workers, group.world_size)
    if group.main:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).unlink(missing_ok=True)  # an interrupted rerun must not look like a finished run
        (out / LOG).write_text("")
    return _Session(cfg, group, cache, splits, runtime)


def _train(session: _Session) -> Run | None:
    """`train_probe` in one process: all train and evaluate, rank 0 writes and returns the run."""
    cfg, cache, splits, group = session.cfg, session.cache, session.splits, session.group
    for note in splits.notes:
        session.say(f"note: {note}")
    reading = "in memory" if session.runtime.in_memory else "streaming"
    where = f", {group.world_size} processes ({group.device.type})" if group.world_size > 1 else ""
    session.say(f"train-probe: {cfg.probe} on {cache.path} ({splits.counts()}), {reading}{where}")
    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    probe = build_probe_for_cache(cfg.probe, cache, **cfg.probe_options)
    extra = probe.fit(cache, splits.train, splits.val, workers=session.runtime.workers, seed=cfg.seed)
    epoch_times: list[float] = []
    if extra is None:
        extra, epoch_times = _fit(session, probe.to(group.device))
    elif group.main:
        with (Path(cfg.out) / LOG).open("a") as handle:
            handle.write(json.dumps({"epoch": 1, **extra}) + "\n")
    train_time = time.monotonic() - start
    probe = probe.to(group.device)
    val, test = session.evaluate(probe, splits.val), session.evaluate(probe, splits.test)
    if not group.main:
        return None
    metrics = {"probe": probe.name, "num_params": probe.num_params(), **extra,
               "train_clips": len(splits.train), **test, "val": val}  # fmt: skip
    timing = {"train_time_s": round(train_time, 3), "epoch_times_s": [round(t, 3) for t in epoch_times]}
    save_run(cfg.out, probe=probe.cpu(), config=_run_config(session, probe), metrics=metrics, timing=timing,
             split_ids=splits.clip_ids(cache))  # fmt: skip
    session.say(
        f"{probe.name}: test top-1 {test['top1']:.4f}, mean per-class {test['mean_class_accuracy']:.4f}, "
        f"{metrics['num_params']:,} params, {train_time:.1f}s; run in {cfg.out}"
    )
    return load_run(cfg.out)


def _run_config(session: _Session, probe: Probe) -> RunConfig:
    splits = session.splits
    return RunConfig(
        probe=probe.name, layout=probe.layout, num_classes=probe.num_classes, probe_options=probe.config(),
        train=session.cfg, runtime=session.runtime, cache=cache_ref(session.cache),
        splits=SplitRecord(splits.source, splits.counts(), tuple(splits.notes)), stepcli_version=__version__,
    )  # fmt: skip


def _fit(session: _Session, probe: Probe) -> tuple[dict, list[float]]:
    """The gradient-descent loop; leaves `probe` at its best-on-val epoch, returns that epoch and epoch times.

    `--batch-size` is the global batch: with W processes each step's batch is split across them
    (`shard_batch`), so the steps, the LR schedule and each step's gradient are those of one process.
    """
    cfg, group = session.cfg, session.group
    model: nn.Module = probe
    if group.world_size > 1:
        model = DistributedDataParallel(probe, device_ids=[group.device.index] if group.device.type == "cuda" else None)
        # one clip on a rank makes step's cls-token gradient a strided slice, which DDP copies and
        # reports on every rank; the copy is of D floats and the numbers are right
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    session.say(f"{probe.name}: {probe.num_params():,} trainable parameters")
    steps_per_epoch = math.ceil(len(session.splits.train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    optimizer = probe.optimizer(cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    best_key, best_state, best_epoch, epoch_times = None, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        tick = time.monotonic()
        loss, accuracy = _epoch(session, model, probe, optimizer, scheduler, epoch)
        epoch_times.append(time.monotonic() - tick)
        metrics = session.evaluate(probe, session.splits.val)
        record = {
            "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": round(loss, 6),
            "train_top1": round(accuracy, 6), "val_loss": metrics["loss"], "val_top1": metrics["top1"],
            "val_mean_class_accuracy": metrics["mean_class_accuracy"], "epoch_time_s": round(epoch_times[-1], 3),
        }  # fmt: skip
        if group.main:
            with (Path(cfg.out) / LOG).open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        session.say("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        # every rank evaluated the same gathered logits, so every rank keeps the same checkpoint
        key = (metrics["top1"], -metrics["loss"])
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(probe.state_dict())
    probe.load_state_dict(best_state)
    probe.eval()
    return {"best_epoch": best_epoch, "epochs": cfg.epochs}, epoch_times


def _epoch(session: _Session, model: nn.Module, probe: Probe, optimizer, scheduler, epoch: int) -> tuple[float, float]:
    """One pass over the train split; returns its mean loss and accuracy over all processes."""
    cfg, group, device = session.cfg, session.group, session.group.device
    train = session.splits.train
    model.train()
    loss_sum, correct, seen = 0.0, 0.0, 0
    batches = epoch_batches(train, cfg.batch_size, cfg.seed, epoch)  # the same on every rank
    shards = [shard_batch(batch, group.rank, group.world_size) for batch in batches]
    views = epoch_views(session.cache, train, cfg.seed, epoch)
    with Progress(len(train), f"epoch {epoch}/{cfg.epochs}", enabled=group.main) as bar:
        rows = [rows for rows, _ in shards]
        loaded = iterate_batches(session.cache, rows, session.runtime.workers, [views[r] for r in rows])
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
    return loss_sum / seen, correct / seen
