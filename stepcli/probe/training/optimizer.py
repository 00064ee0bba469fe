"""A head under gradient training: its probe, optimizer and schedule, and one step of it.

A plain `train-probe` run trains one head; a sweep trains one per combination of swept values on
the same batches. Each head keeps its own best-on-val checkpoint and epoch log.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stepcli.distributed import Group
from stepcli.probe.config import TrainConfig
from stepcli.probe.evaluation.inference import autocast
from stepcli.probe.models.base import Probe
from stepcli.probe.training.compiling import forward_of


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimizer step: linear ramp to 1 over `warmup_steps`, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class Head:
    """One independently trained head: its swept values, config, probe and training state."""

    values: dict
    cfg: TrainConfig
    probe: Probe
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    best_key: tuple | None = None
    best_state: dict | None = None
    best_epoch: int = 0
    log: list[dict] = field(default_factory=list)
    forward: Callable | None = None  # `model`, compiled with --compile

    @property
    def seeds(self) -> list[int]:
        """The seed of this head's batch order, as a list like `StackedHeads.seeds`."""
        return [self.cfg.seed]

    def prepare(self, group: Group, train_clips: int) -> None:
        """The (DDP-wrapped) model, AdamW and the warmup-cosine schedule over `train_clips` per epoch."""
        cfg, probe = self.cfg, self.probe.to(group.device)
        self.model = probe
        if group.world_size > 1:
            self.model = DistributedDataParallel(
                probe, device_ids=[group.device.index] if group.device.type == "cuda" else None
            )
            # one clip on a rank makes step's cls-token gradient a strided slice, which DDP copies and
            # reports on every rank; the copy is of D floats and the numbers are right
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        steps_per_epoch = math.ceil(train_clips / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
        self.optimizer = probe.optimizer(cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(warmup, total))
        self.forward = forward_of(self.model, cfg.compile)

    def step(
        self, group: Group, tokens: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, batch_size: int
    ) -> list[float]:
        """One optimizer step on this process's share of a batch; returns loss sum and hits over all processes."""
        with autocast(group.device):
            logits = self.forward(tokens)
        losses = F.cross_entropy(logits.float(), labels, reduction="none") * weights
        # DDP averages gradients over the W processes; scaling each one's loss sum by
        # W / (global batch) makes that average the gradient of the global batch's mean loss
        loss = losses.sum() * (group.world_size / batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.probe.parameters(), self.cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        hits = ((logits.argmax(1) == labels).float() * weights).sum()
        return group.sum(torch.stack([losses.detach().sum(), hits]).tolist())  # one wait for the device

    def keep_if_best(self, epoch: int, val: dict) -> None:
        """Keep this epoch's weights when val top-1 is the best so far (ties: lower val loss)."""
        key = (val["top1"], -(val["loss"] if val["loss"] is not None else float("inf")))  # None: diverged
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, epoch
            self.best_state = {k: v.detach().clone() for k, v in self.probe.state_dict().items()}
