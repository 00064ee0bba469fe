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

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stepcli import StepcliError, __version__
from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.distributed import Group, process_group, processes_per_node, rank_and_world_size
from stepcli.probe.evaluation.inference import evaluate_heads
from stepcli.probe.models import build_probe_for_cache, probe_class
from stepcli.probe.training.compat import check_frame_cls
from stepcli.probe.training.config import RunConfig, Runtime, SplitRecord, TrainConfig
from stepcli.probe.training.data import (
    Splits,
    epoch_batches,
    epoch_views,
    iterate_batches,
    resolve_splits,
    shard_batch,
    subsample_train,
    use_memory,
)
from stepcli.probe.training.optimizer import Head
from stepcli.probe.training.rundir import CONFIG, LOG, Run, cache_ref, load_run, save_run
from stepcli.probe.training.sweep import SWEEP, SweepHead, SweepRecord, check_sweep, head_configs, select_head
from stepcli.progress import Progress

log = logging.getLogger(__name__)


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

    def evaluate(self, probes: list[nn.Module], rows: np.ndarray, intervals: bool = False) -> list[dict]:
        return evaluate_heads(probes, self.cache, rows, device=self.group.device, workers=self.runtime.workers,
                              group=self.group, intervals=intervals)  # fmt: skip

    def write_log(self, records: list[dict], mode: str = "a") -> None:
        if self.group.main:
            with (Path(self.cfg.out) / LOG).open(mode) as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)


def train_probe(
    cfg: TrainConfig, cache: FeatureCache | None = None, sweep: dict[str, list] | None = None
) -> Run | None:
    """Train (or fit) the probe named in `cfg` and write its run to `cfg.out`.

    `cache`, when given, is `cfg.cache` already opened (and perhaps loaded into memory), so that
    `compare` reads the tokens once for all its probes. `sweep` (`{key: [values]}`) trains one
    head per combination in the same pass and writes the run of the best on val (see `sweep`).

    Under torchrun (or srun with MASTER_ADDR/MASTER_PORT) the processes train one probe together
    with DistributedDataParallel. Rank 0 alone logs and writes the run and returns it; the other
    ranks return None (on several nodes they may not even see rank 0's filesystem).
    """
    check_config(cfg)
    sweep = dict(sweep or {})
    check_sweep(cfg.probe, sweep, cfg.probe_options)
    heads = head_configs(cfg, sweep)
    for _, head in heads:
        check_config(head)
    _, world_size, local_rank = rank_and_world_size()
    if probe_class(cfg.probe).capabilities.fitted and world_size > 1:
        raise StepcliError(
            f"--probe {cfg.probe} is fitted in one process, not across {world_size}; run it without torchrun"
        )
    device = resolve_device(cfg.device, local_rank)
    with process_group(device) as group:
        return _train(_open_session(cfg, group, cache), heads, sweep)


def _open_session(cfg: TrainConfig, group: Group, cache: FeatureCache | None) -> _Session:
    """Open the cache, resolve the splits and whether to read from memory."""
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
    return _Session(cfg, group, cache, splits, runtime)


def _prepare_out(session: _Session) -> None:
    """Create `--out`; an interrupted rerun must not look like a finished run, so its old results go."""
    if session.group.main:
        out = Path(session.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).unlink(missing_ok=True)
        (out / SWEEP).unlink(missing_ok=True)
        (out / LOG).write_text("")


def _build_heads(session: _Session, configs: list[tuple[dict, TrainConfig]]) -> list[Head]:
    heads = []
    for values, cfg in configs:
        torch.manual_seed(cfg.seed)  # each head starts where a plain run of its settings would
        heads.append(Head(values, cfg, build_probe_for_cache(cfg.probe, session.cache, **cfg.probe_options)))
    return heads


def _train(session: _Session, configs: list[tuple[dict, TrainConfig]], sweep: dict[str, list]) -> Run | None:
    """`train_probe` in one process: all train and evaluate, rank 0 writes and returns the run."""
    cfg, cache, splits, group = session.cfg, session.cache, session.splits, session.group
    start = time.monotonic()
    for _, head_cfg in configs:  # every head of a sweep: `--sweep cls=global,frame` too
        check_frame_cls(probe_class(head_cfg.probe), head_cfg.probe_options, session.cache.manifest.extraction)
    heads = _build_heads(session, configs)  # a bad probe option fails here, before --out is touched
    _prepare_out(session)
    for note in splits.notes:
        session.say(f"note: {note}")
    reading = "in memory" if session.runtime.in_memory else "streaming"
    where = f", {group.world_size} processes ({group.device.type})" if group.world_size > 1 else ""
    swept = f", {len(configs)} heads in one pass" if sweep else ""
    session.say(f"train-probe: {cfg.probe} on {cache.path} ({splits.counts()}), {reading}{where}{swept}")
    epoch_times: list[float] = []
    extra = None
    if heads[0].probe.capabilities.fitted:
        extra = heads[0].probe.fit(cache, splits.train, splits.val, workers=session.runtime.workers, seed=cfg.seed)
        session.write_log([{"epoch": 1, **extra}])
    else:
        epoch_times = _fit(session, heads)
    train_time = time.monotonic() - start
    probes = [head.probe.to(group.device) for head in heads]
    vals, tests = session.evaluate(probes, splits.val, True), session.evaluate(probes, splits.test, True)
    if not group.main:
        return None
    chosen = select_head(vals)
    head, test = heads[chosen], tests[chosen]
    if extra is None:
        extra = {"best_epoch": head.best_epoch, "epochs": cfg.epochs}
    metrics = {"probe": head.probe.name, "num_params": head.probe.num_params(), **extra,
               "train_clips": len(splits.train), **test, "val": vals[chosen]}  # fmt: skip
    timing = {"train_time_s": round(train_time, 3), "epoch_times_s": [round(t, 3) for t in epoch_times]}
    if sweep:
        session.write_log(head.log, mode="w")  # the run is the selected head's: its log alone
        record = [SweepHead.of(h.values, h.best_epoch, v, t, h.log) for h, v, t in zip(heads, vals, tests, strict=True)]
        path = SweepRecord(sweep, tuple(record), chosen).save(cfg.out)
        session.say(f"sweep: selected head {chosen} {head.values} on val top-1 {vals[chosen]['top1']:.4f}; "
                    f"every head's numbers in {path}")  # fmt: skip
    save_run(cfg.out, probe=head.probe.cpu(), config=_run_config(session, head), metrics=metrics, timing=timing,
             split_ids=splits.clip_ids(cache))  # fmt: skip
    session.say(
        f"{head.probe.name}: test top-1 {test['top1']:.4f}, mean per-class {test['mean_class_accuracy']:.4f}, "
        f"{metrics['num_params']:,} params, {train_time:.1f}s; run in {cfg.out}"
    )
    return load_run(cfg.out)


def _run_config(session: _Session, head: Head) -> RunConfig:
    splits, probe = session.splits, head.probe
    return RunConfig(
        probe=probe.name, layout=probe.layout, num_classes=probe.num_classes, probe_options=probe.config(),
        train=head.cfg, runtime=session.runtime, cache=cache_ref(session.cache),
        splits=SplitRecord(splits.source, splits.counts(), tuple(splits.notes)), stepcli_version=__version__,
    )  # fmt: skip


def _fit(session: _Session, heads: list[Head]) -> list[float]:
    """The gradient-descent loop over every head; leaves each at its best-on-val epoch, returns epoch times.

    `--batch-size` is the global batch: with W processes each step's batch is split across them
    (`shard_batch`), so the steps, the LR schedule and each step's gradient are those of one process.
    """
    cfg = session.cfg
    for head in heads:
        head.prepare(session.group, len(session.splits.train))
    session.say(f"{heads[0].probe.name}: {heads[0].probe.num_params():,} trainable parameters")
    epoch_times = []
    for epoch in range(1, cfg.epochs + 1):
        tick = time.monotonic()
        train_stats = _epoch(session, heads, epoch)
        epoch_times.append(time.monotonic() - tick)
        val = session.evaluate([head.probe for head in heads], session.splits.val)
        for h, (head, (loss, accuracy), metrics) in enumerate(zip(heads, train_stats, val, strict=True)):
            record = {
                "epoch": epoch, "lr": head.optimizer.param_groups[0]["lr"], "train_loss": round(loss, 6),
                "train_top1": round(accuracy, 6), "val_loss": metrics["loss"], "val_top1": metrics["top1"],
                "val_mean_class_accuracy": metrics["mean_class_accuracy"], "epoch_time_s": round(epoch_times[-1], 3),
            }  # fmt: skip
            head.log.append(record)
            record = {"head": h, **record} if len(heads) > 1 else record
            session.write_log([record])
            session.say("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            head.keep_if_best(epoch, metrics)  # the same gathered logits on every rank: the same checkpoint
    for head in heads:
        head.probe.load_state_dict(head.best_state)
        head.probe.eval()
    return epoch_times


def _epoch(session: _Session, heads: list[Head], epoch: int) -> list[tuple[float, float]]:
    """One pass over the train split for every head; returns each head's mean loss and accuracy.

    Each batch is read, moved to the device and cast once, then every head takes its step on it."""
    cfg, group, device = session.cfg, session.group, session.group.device
    train = session.splits.train
    for head in heads:
        head.model.train()
    sums, seen = [[0.0, 0.0] for _ in heads], 0
    dtype = heads[0].probe.dtype
    batches = epoch_batches(train, cfg.batch_size, cfg.seed, epoch)  # the same on every rank
    shards = [shard_batch(batch, group.rank, group.world_size) for batch in batches]
    views = epoch_views(session.cache, train, cfg.seed, epoch)
    with Progress(len(train), f"epoch {epoch}/{cfg.epochs}", enabled=group.main) as bar:
        rows = [rows for rows, _ in shards]
        loaded = iterate_batches(session.cache, rows, session.runtime.workers, [views[r] for r in rows])
        for batch, (_, weights), (tokens, labels) in zip(batches, shards, loaded, strict=True):
            tokens = tokens.to(device, non_blocking=True).to(dtype)
            labels = labels.to(device, non_blocking=True)
            weights = torch.from_numpy(weights).to(device)
            for head, total in zip(heads, sums, strict=True):
                step_loss, step_correct = head.step(session.group, tokens, labels, weights, len(batch))
                total[0], total[1] = total[0] + step_loss, total[1] + step_correct
            seen += len(batch)
            bar.update(len(batch), loss=sum(t[0] for t in sums) / len(sums) / seen,
                       acc=sum(t[1] for t in sums) / len(sums) / seen)  # fmt: skip
    return [(loss_sum / seen, correct / seen) for loss_sum, correct in sums]
