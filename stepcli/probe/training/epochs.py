"""The gradient loop over every head of a pass: epochs, batches, steps, per-epoch validation.

Heads that can be stacked (`stacked.group_heads`, one process) train as one `StackedHeads`; a
head alone in its group takes today's path, `Head.step`, so a plain run is unchanged. Heads of
several seeds each draw their own batch order and views; a step reads the union of the clips
those batches hold once and gives each head its own `[B, ...]` (stacked: `[K, B, ...]`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from stepcli.cache.reader import FeatureCache
from stepcli.probe.data import epoch_batches, epoch_order, epoch_views, iterate_batches, shard_batch
from stepcli.probe.training.optimizer import Head
from stepcli.probe.training.session import Session
from stepcli.probe.training.stacked import StackedHeads, group_heads
from stepcli.progress import Progress

Trainer = Head | StackedHeads


def make_trainers(session: Session, heads: list[Head]) -> list[tuple[Trainer, list[int]]]:
    """Each trainer with the indices of the heads it trains; stacked groups only in one process."""
    group, clips = session.group, len(session.splits.train)
    groups = group_heads([h.probe for h in heads]) if group.world_size == 1 else [[i] for i in range(len(heads))]
    trainers: list[tuple[Trainer, list[int]]] = []
    for members in groups:
        if len(members) == 1:
            heads[members[0]].prepare(group, clips)
            trainers.append((heads[members[0]], members))
        else:
            trainers.append((StackedHeads([heads[i] for i in members], group.device, clips), members))
    return trainers


def trainer_modules(trainers: list[tuple[Trainer, list[int]]]) -> tuple[list[nn.Module], list[int]]:
    """The modules that evaluate every head now (a stacked group as one) and the head of each output."""
    modules = [t.model if isinstance(t, StackedHeads) else t.probe for t, _ in trainers]
    return modules, [i for _, members in trainers for i in members]


def in_head_order(results: list, order: list[int]) -> list:
    """`results[j]` belongs to head `order[j]`: back in head order."""
    out = [None] * len(order)
    for j, i in enumerate(order):
        out[i] = results[j]
    return out


def fit_heads(session: Session, heads: list[Head], on_epoch) -> list[float]:
    """The gradient-descent loop over every head; leaves each at its best-on-val epoch, returns epoch times.

    `on_epoch(epoch, head index, train (loss, accuracy), val metrics, lr, epoch time)` logs a head's epoch.
    """
    trainers = make_trainers(session, heads)
    session.say(f"{heads[0].probe.name}: {heads[0].probe.num_params():,} trainable parameters")
    epoch_times = []
    for epoch in range(1, session.cfg.epochs + 1):
        tick = time.monotonic()
        train_stats = run_epoch(session, trainers, epoch)
        epoch_times.append(time.monotonic() - tick)
        for trainer, _ in trainers:
            if isinstance(trainer, StackedHeads):
                trainer.write_back()
        modules, order = trainer_modules(trainers)
        val = in_head_order(session.evaluate(modules, session.splits.val), order)
        lrs = {}
        for trainer, members in trainers:
            for k, i in enumerate(members):
                lrs[i] = trainer.lr(k) if isinstance(trainer, StackedHeads) else trainer.optimizer.param_groups[0]["lr"]
        for h, head in enumerate(heads):
            on_epoch(epoch, h, train_stats[h], val[h], lrs[h], epoch_times[-1])
            head.keep_if_best(epoch, val[h])  # the same gathered logits on every rank: the same checkpoint
    for head in heads:
        head.probe.load_state_dict(head.best_state)
        head.probe.eval()
    return epoch_times


def seed_steps(
    cache: FeatureCache, trains: dict[int, np.ndarray], batch_size: int, epoch: int, workers: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, dict[int, np.ndarray]]]:
    """Per step: batch size, the tokens and labels of the union of every seed's batch (each cached
    clip view read once), and each seed's rows of that union in its batch order. `trains` holds
    each seed's train rows (as many for every seed)."""
    seeds = list(trains)
    orders = {s: epoch_batches(trains[s], batch_size, s, epoch, cache.view_nbytes) for s in seeds}
    views = {s: epoch_views(cache, trains[s], s, epoch) for s in seeds}
    unions, picks = [], []
    for i in range(len(orders[seeds[0]])):
        pairs = {s: np.stack([orders[s][i], views[s][orders[s][i]]], 1) for s in seeds}
        union, inverse = np.unique(np.concatenate(list(pairs.values())), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        cut = np.cumsum([0, *(len(p) for p in pairs.values())])
        unions.append(union)
        picks.append({s: inverse[cut[j] : cut[j + 1]] for j, s in enumerate(seeds)})
    loaded = iterate_batches(cache, [u[:, 0] for u in unions], workers, [u[:, 1] for u in unions])
    for pick, (tokens, labels) in zip(picks, loaded, strict=True):
        yield len(pick[seeds[0]]), tokens, labels, pick


def _for(trainer: Trainer, tokens: torch.Tensor, labels: torch.Tensor, pick: dict[int, np.ndarray] | None):
    """A trainer's share of a step's tokens: shared `[B, ...]`, or `[K, B, ...]` for heads of several seeds."""
    if pick is None:
        return tokens, labels
    seeds = trainer.seeds
    if len(set(seeds)) == 1:
        index = torch.from_numpy(pick[seeds[0]]).to(tokens.device)
        return tokens[index], labels[index]
    index = torch.from_numpy(np.stack([pick[s] for s in seeds])).to(tokens.device)
    return tokens[index], labels[index]


def run_epoch(session: Session, trainers: list[tuple[Trainer, list[int]]], epoch: int) -> list[tuple[float, float]]:
    """One pass over the train split for every head; returns each head's mean loss and accuracy.

    Each batch is read, moved to the device and cast once, then every trainer takes its step on it.
    Stacked heads keep their sums on the device; the host waits for them once per step, and only
    to show progress."""
    cfg, group, device = session.cfg, session.group, session.group.device
    train = session.splits.train
    heads = sum(len(members) for _, members in trainers)
    seeds = sorted({s for t, _ in trainers for s in t.seeds})
    for trainer, _ in trainers:
        trainer.model.train()
    sums: list[list[float]] = [[0.0, 0.0] for _ in range(heads)]
    stacked_sums = {id(t): torch.zeros(len(m), 2, device=device) for t, m in trainers if isinstance(t, StackedHeads)}
    seen = 0
    dtype = trainers[0][0].probe.dtype
    if len(seeds) == 1:
        drawn = epoch_order(train, cfg.batch_size, seeds[0], epoch, session.cache.view_nbytes)  # the same on every rank
        batches = drawn.batches
        shards = [shard_batch(batch, group.rank, group.world_size) for batch in batches]
        views = epoch_views(session.cache, train, seeds[0], epoch)
        rows = [rows for rows, _ in shards]
        loaded = iterate_batches(session.cache, rows, session.runtime.workers, [views[r] for r in rows], drawn.groups)
        steps = ((len(b), t, y, None, w) for b, (_, w), (t, y) in zip(batches, shards, loaded, strict=True))
    else:
        steps = ((n, t, y, pick, np.ones(n, dtype=np.float32))
                 for n, t, y, pick in seed_steps(session.cache, {s: session.split_of(s).train for s in seeds},
                                                 cfg.batch_size, epoch, session.runtime.workers))  # fmt: skip
    with Progress(len(train), f"epoch {epoch}/{cfg.epochs}", enabled=group.main) as bar:
        for size, tokens, labels, pick, weights in steps:
            if device.type == "cuda":
                tokens, labels = tokens.pin_memory(), labels.pin_memory()
            tokens = tokens.to(device, non_blocking=True).to(dtype)
            labels = labels.to(device, non_blocking=True)
            weights = torch.from_numpy(weights).to(device)
            for trainer, members in trainers:
                x, y = _for(trainer, tokens, labels, pick)
                if isinstance(trainer, StackedHeads):
                    stacked_sums[id(trainer)] += trainer.step(x, y, weights, size)
                    continue
                step_loss, step_correct = trainer.step(group, x, y, weights, size)
                total = sums[members[0]]
                total[0], total[1] = total[0] + step_loss, total[1] + step_correct
            seen += size
            if bar.enabled:
                _collect(trainers, stacked_sums, sums)
                bar.update(
                    size, loss=sum(t[0] for t in sums) / heads / seen, acc=sum(t[1] for t in sums) / heads / seen
                )
    _collect(trainers, stacked_sums, sums)
    return [(loss_sum / seen, correct / seen) for loss_sum, correct in sums]


def _collect(trainers, stacked_sums: dict[int, torch.Tensor], sums: list[list[float]]) -> None:
    """Stacked heads' device sums into `sums`, with one wait for the device."""
    stacked = [(t, m) for t, m in trainers if isinstance(t, StackedHeads)]
    if not stacked:
        return
    values = torch.cat([stacked_sums[id(t)] for t, _ in stacked]).tolist()
    for i, value in zip([i for _, m in stacked for i in m], values, strict=True):
        sums[i] = list(value)
