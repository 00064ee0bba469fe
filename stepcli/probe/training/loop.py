"""Training a probe from a feature cache: AdamW, linear warmup then cosine, gradient clipping.

Everything random is seeded (probe init, split, low-data subset, batch order), so on CPU the same
seed and cache give the same metrics.json. The checkpoint kept is the one with the best
validation accuracy (ties: lower validation loss); the reported numbers are on test. A probe with
a `fit` hook (logreg) is fitted by it instead of the gradient loop. Several heads (a sweep, or
the seeds of `--seeds`) train in one pass (`train_runs`, `epochs`), stacked where they can be.

Under torchrun the same loop runs in every process with DistributedDataParallel (gloo on CPU,
nccl on GPU); `--batch-size` stays the global batch, so one and W processes take the same steps
and report the same kind of numbers (loss and accuracy summed over all processes).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.distributed import process_group, rank_and_world_size
from stepcli.errors import StepcliError
from stepcli.outputs import check_out, quoted
from stepcli.probe.config import RunConfig, SplitRecord, TrainConfig
from stepcli.probe.models import build_probe_for_cache, probe_class
from stepcli.probe.runs.compat import check_frame_cls
from stepcli.probe.runs.rundir import CONFIG, LOG, Run, cache_ref, load_run, save_run
from stepcli.probe.training.epochs import fit_heads, in_head_order
from stepcli.probe.training.loggers import EpochRecord, Loggers, check_logger
from stepcli.probe.training.optimizer import Head
from stepcli.probe.training.session import Session, open_session
from stepcli.probe.training.stacked import eval_modules
from stepcli.probe.training.sweep import SWEEP, SweepHead, SweepRecord, check_sweep, head_configs, select_head
from stepcli.version import __version__

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
    check_logger(cfg.logger)
    out = check_out(cfg.out, "run")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LOG).exists())):
        raise StepcliError(f"--out {out} exists and is not a stepcli run directory; choose a new --out")


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
    runs = train_runs([cfg], cache, sweep)
    return None if runs is None else runs[0]


def train_runs(
    cfgs: list[TrainConfig], cache: FeatureCache | None = None, sweep: dict[str, list] | None = None
) -> list[Run] | None:
    """`train_probe` of several configs in one pass: each its own run (e.g. one per seed).

    The configs differ only in what heads may differ in (seed, out, swept keys): they train on
    the same split, each with its own initialisation and batch order, and stacked where they can
    be (`stacked`). Rank 0 gets the runs, in the order of `cfgs`; other ranks None.
    """
    for cfg in cfgs:
        check_config(cfg)
    sweep = dict(sweep or {})
    check_sweep(cfgs[0].probe, sweep, cfgs[0].probe_options)
    heads = [head for cfg in cfgs for head in head_configs(cfg, sweep)]
    for _, head in heads:
        check_config(head)
    _, world_size, local_rank = rank_and_world_size()
    if probe_class(cfgs[0].probe).capabilities.fitted and world_size > 1:
        raise StepcliError(
            f"--probe {cfgs[0].probe} is fitted in one process, not across {world_size}; run it without torchrun"
        )
    device = resolve_device(cfgs[0].device, local_rank)
    with process_group(device) as group:
        session = open_session(cfgs[0], group, cache, sorted({cfg.seed for cfg in cfgs}))
        return _train(session, heads, sweep)


def _prepare_out(session: Session, outs: list[Path]) -> None:
    """Create each `--out`; an interrupted rerun must not look like a finished run, so its old results go."""
    if session.group.main:
        for out in outs:
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG).unlink(missing_ok=True)
            (out / SWEEP).unlink(missing_ok=True)
            (out / LOG).write_text("")


def _build_heads(session: Session, configs: list[tuple[dict, TrainConfig]]) -> list[Head]:
    heads = []
    for values, cfg in configs:
        torch.manual_seed(cfg.seed)  # each head starts where a plain run of its settings would
        heads.append(Head(values, cfg, build_probe_for_cache(cfg.probe, session.cache, **cfg.probe_options)))
    return heads


def _evaluate_final(session: Session, heads: list[Head], rows: np.ndarray) -> list[dict]:
    """Every head's metrics with intervals; heads that stack are evaluated as one model."""
    probes = [head.probe.to(session.group.device) for head in heads]
    if session.group.world_size > 1:
        return session.evaluate(probes, rows, True)
    modules, order = eval_modules(probes)
    return in_head_order(session.evaluate(modules, rows, True), order)


def _train(session: Session, configs: list[tuple[dict, TrainConfig]], sweep: dict[str, list]) -> list[Run] | None:
    """`train_runs` in one process: all train and evaluate, rank 0 writes and returns the runs."""
    cfg, cache, splits, group = session.cfg, session.cache, session.splits, session.group
    start = time.monotonic()
    for _, head_cfg in configs:  # every head of a sweep: `--sweep cls=global,frame` too
        check_frame_cls(probe_class(head_cfg.probe), head_cfg.probe_options, session.cache.manifest.extraction)
    heads = _build_heads(session, configs)  # a bad probe option fails here, before --out is touched
    outs: dict[Path, list[int]] = {}
    for i, head in enumerate(heads):
        outs.setdefault(Path(head.cfg.out), []).append(i)
    _prepare_out(session, list(outs))
    for note in splits.notes:
        session.say(f"note: {note}")
    if session.leakage.found and group.main:
        log.warning(session.leakage.warning())
    reading = "in memory" if session.runtime.in_memory else "streaming"
    where = f", {group.world_size} processes ({group.device.type})" if group.world_size > 1 else ""
    swept = f", {len(configs)} heads in one pass" if len(configs) > 1 else ""
    session.say(f"train-probe: {cfg.probe} on {cache.path} ({splits.counts()}), {reading}{where}{swept}")
    epoch_times: list[float] = []
    extra = None
    loggers = {out: Loggers(out, cfg.logger) for out in outs} if group.main else {}
    try:
        if heads[0].probe.capabilities.fitted:  # no epochs: its log.csv is the header
            extra = heads[0].probe.fit(cache, splits.train, splits.val, workers=session.runtime.workers, seed=cfg.seed)
            session.write_log(heads[0].cfg.out, [{"epoch": 1, **extra}])
        else:
            epoch_times = fit_heads(session, heads, _epoch_logger(session, heads, outs, loggers))
    finally:
        for logger in loggers.values():
            logger.close()
    train_time = time.monotonic() - start
    vals, tests = _evaluate_final(session, heads, splits.val), _evaluate_final(session, heads, splits.test)
    if not group.main:
        return None
    runs = []
    for out, members in outs.items():
        chosen = members[select_head([vals[i] for i in members])]
        head, test = heads[chosen], tests[chosen]
        split = session.split_of(head.cfg.seed)
        metrics = {"probe": head.probe.name, "num_params": head.probe.num_params(),
                   **(extra or {"best_epoch": head.best_epoch, "epochs": cfg.epochs}),
                   "train_clips": len(split.train), **test, "val": vals[chosen],
                   **({"leakage": session.leakage.to_dict()} if session.leakage.found else {})}  # fmt: skip
        timing = {"train_time_s": round(train_time, 3), "epoch_times_s": [round(t, 3) for t in epoch_times]}
        if len(heads) > 1:  # one pass trained every head: each run's share of it, and the pass itself
            timing = {"train_time_s": round(train_time / len(heads), 3), "pass_train_time_s": round(train_time, 3),
                      "heads_in_pass": len(heads), "pass_epoch_times_s": timing["epoch_times_s"]}  # fmt: skip
        if sweep:
            session.write_log(out, head.log, mode="w")  # the run is the selected head's: its log alone
            record = [SweepHead.of(heads[i].values, heads[i].best_epoch, vals[i], tests[i], heads[i].log)
                      for i in members]  # fmt: skip
            path = SweepRecord(sweep, tuple(record), members.index(chosen)).save(out)
            session.say(f"sweep: selected head {members.index(chosen)} {head.values} on val top-1 "
                        f"{vals[chosen]['top1']:.4f}; every head's numbers in {path}")  # fmt: skip
        save_run(out, probe=head.probe.cpu(), config=_run_config(session, head), metrics=metrics, timing=timing,
                 split_ids=split.clip_ids(cache), split_groups=split.groups(cache))  # fmt: skip
        session.say(
            f"{head.probe.name}: test top-1 {test['top1']:.4f}, mean per-class {test['mean_class_accuracy']:.4f}, "
            f"{metrics['num_params']:,} params, {train_time:.1f}s; run in {out}"
        )
        runs.append(load_run(out))
    return runs


def _epoch_logger(session: Session, heads: list[Head], outs: dict[Path, list[int]], loggers: dict[Path, Loggers]):
    """`fit_heads`' callback: a head's epoch into its log, its run's log.jsonl, log.csv (and TensorBoard) and
    the console."""
    within = {i: (out, members.index(i), len(members)) for out, members in outs.items() for i in members}
    diverged: set[int] = set()

    def on_epoch(epoch: int, h: int, train: tuple, metrics: dict, lr: float, epoch_time: float) -> None:
        (loss, accuracy), (out, index, count) = train, within[h]
        if not math.isfinite(loss):
            diverged.add(h)
            if len(diverged) == len(heads):  # one head may diverge at a swept lr; all of them: the tokens
                raise StepcliError(
                    f"train loss is {loss} at epoch {epoch}: the cache {quoted(session.cache.path)} may hold "
                    f"non-finite tokens (check with `stepcli verify {quoted(session.cache.path)}`) or --lr {lr:g} "
                    "diverges; no run was saved"
                )
            loss = None
        record = {
            "epoch": epoch, "lr": lr, "train_loss": None if loss is None else round(loss, 6),
            "train_top1": round(accuracy, 6),
            "val_loss": metrics["loss"], "val_top1": metrics["top1"],
            "val_mean_class_accuracy": metrics["mean_class_accuracy"], "epoch_time_s": round(epoch_time, 3),
        }  # fmt: skip
        heads[h].log.append(record)
        if out in loggers:
            loggers[out].log_epoch(EpochRecord(
                head=index, epoch=epoch, train_loss=record["train_loss"], train_top1=record["train_top1"],
                val_loss=metrics["loss"], val_top1=metrics["top1"],
                val_mean_class_accuracy=metrics["mean_class_accuracy"], lr=lr,
                weight_decay=heads[h].cfg.weight_decay, epoch_time_s=record["epoch_time_s"],
            ))  # fmt: skip
        record = {"head": index, **record} if count > 1 else record
        session.write_log(out, [record])
        which = "" if len(outs) == 1 else f"{out.name}  "
        session.say(
            which
            + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
            + ("  (diverged: this head's loss is not finite)" if loss is None else "")
        )

    return on_epoch


def _run_config(session: Session, head: Head) -> RunConfig:
    splits, probe = session.split_of(head.cfg.seed), head.probe
    return RunConfig(
        probe=probe.name, layout=probe.layout, num_classes=probe.num_classes, probe_options=probe.config(),
        train=head.cfg, runtime=session.runtime, cache=cache_ref(session.cache),
        splits=SplitRecord(splits.source, splits.counts(), tuple(splits.notes)), stepcli_version=__version__,
    )  # fmt: skip
