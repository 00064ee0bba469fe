"""K heads of one probe trained as one model: a sweep's settings, or seeds, at the cost of a few runs.

Heads of the same probe with the same options have parameters of the same shapes; stacked along
a leading head axis (one `[K, P]` tensor, each head's parameters a row) they take one forward
over the shared batch, one backward and one AdamW step with each head's own learning rate,
weight decay, warmup, schedule and gradient-norm clip. A probe with a stacked form
(`Probe.stacked_logits`, e.g. a one-query readout) runs all heads in about one pass over the
tokens; the others, and any probe with buffers (each head keeps its own, e.g. BatchNorm
statistics), run head by head inside the same step. Losses and hits stay on the device:
nothing waits for the host inside a step.

A head's numbers are those of its separate run up to float rounding (the same initialisation,
batches and update rule); heads whose shapes or options differ form separate groups.
"""

from __future__ import annotations

import json
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from stepcli.private import fused_adamw
from stepcli.probe.evaluation.inference import autocast
from stepcli.probe.models.base import Probe
from stepcli.probe.training.compiling import forward_of
from stepcli.probe.training.optimizer import Head, warmup_cosine

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, which a separate run uses


def stack_key(probe: Probe) -> str:
    """Heads with equal keys can be stacked: the same probe, options and parameter shapes."""
    shapes = [(name, list(p.shape)) for name, p in probe.named_parameters()]
    return json.dumps([probe.name, probe.config(), shapes], sort_keys=True, default=str)


def group_heads(probes: list[Probe]) -> list[list[int]]:
    """Indices of `probes` by `stack_key`, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, probe in enumerate(probes):
        groups.setdefault(stack_key(probe), []).append(i)
    return list(groups.values())


class StackedModel(nn.Module):
    """K probes of one kind as one module: `tokens` -> logits `[K, B, C]`.

    `tokens` are `[B, T, P+N, D]` shared by all heads or `[K, B, T, P+N, D]`. Each of the probe's
    parameters is one `[K, *shape]` parameter, head k's in row k; all of them are views into one
    `[K, P]` tensor, `flat`, whose row k is head k's parameters end to end (those with weight
    decay first), so that one kernel can update a head's whole row.
    """

    def __init__(self, probes: list[Probe], device: torch.device) -> None:
        super().__init__()
        template = probes[0]
        # a tuple, so that the probes' own parameters are not registered here; each head keeps its
        # buffers (e.g. EP's BatchNorm statistics) in its own probe, and `train` reaches every probe
        self._probes = tuple(probes)
        named = list(template.named_parameters())
        skip = template.no_weight_decay()
        layout = sorted(range(len(named)), key=lambda i: named[i][0] in skip)  # decayed first, stable
        offsets, start = {}, 0
        for i in layout:
            offsets[i], start = start, start + named[i][1].numel()
        self.decayed = sum(p.numel() for name, p in named if name not in skip)
        k = len(probes)
        self.flat = torch.empty(k, start, device=device)
        self.views = [(offsets[i], p.numel(), tuple(p.shape)) for i, (_, p) in enumerate(named)]
        self.names = [name for name, _ in named]
        with torch.no_grad():
            rows = zip(*(q.parameters() for q in probes), strict=True)
            for (offset, size, _), row in zip(self.views, rows, strict=True):
                self.flat[:, offset : offset + size].copy_(torch.stack([r.detach().flatten() for r in row]))
        self.stacked = nn.ParameterList([nn.Parameter(self.view(self.flat, i)) for i in range(len(named))])
        self.stacked_heads, self.num_classes = k, template.num_classes
        self.train(template.training)  # the heads' mode, so that restoring this module's mode keeps theirs

    def view(self, flat: Tensor, i: int) -> Tensor:
        """Parameter i of every head, `[K, *shape]`, as a view into `flat` (or a tensor laid out alike)."""
        offset, size, shape = self.views[i]
        return flat[:, offset : offset + size].view(flat.shape[0], *shape)

    @property
    def template(self) -> Probe:
        return self._probes[0]

    def train(self, mode: bool = True) -> StackedModel:
        """Train or eval mode for this module and every head's probe (their buffers and mode are theirs)."""
        super().train(mode)
        for probe in self._probes:
            probe.train(mode)
        return self

    def params(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.stacked, strict=True))

    def forward(self, tokens: Tensor) -> Tensor:
        template = self.template
        template.check_tokens(tokens if tokens.ndim == 4 else tokens[0])
        params = self.params()
        # a stacked form reads parameters only: a probe with buffers (their own per head) runs head by head
        logits = None if any(True for _ in template.buffers()) else template.stacked_logits(params, tokens)
        if logits is not None:
            return logits
        per_head = tokens.ndim == 5
        return torch.stack([
            functional_call(probe, {n: p[i] for n, p in params.items()}, (tokens[i] if per_head else tokens,))
            for i, probe in enumerate(self._probes)
        ])  # fmt: skip

    def write_back(self, probes: list[Probe]) -> None:
        """Copy each head's rows into its own probe (for its checkpoint and its run)."""
        with torch.no_grad():
            for k, probe in enumerate(probes):
                for p, stacked in zip(probe.parameters(), self.stacked, strict=True):
                    p.copy_(stacked[k])


class StackedHeads:
    """The training state of K stacked heads: model, AdamW moments and every head's schedule.

    The gradients accumulate into one `[K, P]` buffer laid out like the parameters, so a step
    clips every head with one norm, decays every head with one multiply, and updates each head
    with one call of `torch.optim.AdamW`'s fused kernel (its own learning rate, its clipping
    factor as the kernel's `grad_scale`).
    """

    def __init__(self, heads: list[Head], device: torch.device, train_clips: int) -> None:
        self.heads, self.device = heads, device
        model = self.model = StackedModel([head.probe.to(device) for head in heads], device)
        for head in heads:
            head.model = head.probe
        self.forward = forward_of(model, heads[0].cfg.compile)
        cfgs = [head.cfg for head in heads]
        steps_per_epoch = math.ceil(train_clips / cfgs[0].batch_size)
        total = cfgs[0].epochs * steps_per_epoch
        factors = [warmup_cosine(min(round(c.warmup_epochs * steps_per_epoch), total - 1), total) for c in cfgs]
        # lr of every head at every step, as the LambdaLR of a separate run sets it
        self.lr_table = [[c.lr * f(step) for c, f in zip(cfgs, factors, strict=True)] for step in range(total + 1)]
        self.lrs = torch.tensor(self.lr_table, dtype=torch.float32, device=device)
        self.weight_decay = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float32, device=device)
        self.clip = torch.tensor([c.clip_grad for c in cfgs], dtype=torch.float32, device=device)
        self.grad = torch.zeros_like(model.flat)
        for i, p in enumerate(model.stacked):
            p.grad = model.view(self.grad, i)  # backward accumulates here, in place
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(model.flat), torch.zeros_like(model.flat)
        self.scales, self.step_counts = torch.ones(len(heads), device=device), torch.zeros(len(heads), device=device)
        tensors = (model.flat, self.grad, self.exp_avg, self.exp_avg_sq, self.scales, self.step_counts)
        self.rows = [[t[k : k + 1] for t in tensors] for k in range(len(heads))]  # views made once
        self.steps = 0

    @property
    def seeds(self) -> list[int]:
        return [head.cfg.seed for head in self.heads]

    @property
    def probe(self) -> Probe:
        """The first head's probe: what every head's is like."""
        return self.heads[0].probe

    def lr(self, k: int) -> float:
        """Head k's learning rate now (what a separate run's optimizer holds)."""
        return self.lr_table[self.steps][k]

    def train(self) -> None:
        self.model.train()

    def step(self, tokens: Tensor, labels: Tensor, weights: Tensor, batch_size: int) -> Tensor:
        """One optimizer step of every head; returns `[K, 2]` loss sums and hits, on the device."""
        with autocast(self.device):
            logits = self.forward(tokens)
        k, b, c = logits.shape
        labels, weights = labels.expand(k, b), weights.expand(k, b)
        losses = F.cross_entropy(logits.float().reshape(k * b, c), labels.reshape(-1), reduction="none")
        losses = losses.view(k, b) * weights
        self.grad.zero_()
        with warnings.catch_warnings():  # the gradients are views into `grad`, strided like the parameters
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            (losses.sum() / batch_size).backward()
        self._update()
        hits = ((logits.argmax(-1) == labels).float() * weights).sum(1)
        return torch.stack([losses.detach().sum(1), hits], dim=1)

    @torch.no_grad()
    def _update(self) -> None:
        """Per-head gradient-norm clipping and AdamW, as `clip_grad_norm_` and `torch.optim.AdamW` do it."""
        flat = self.model.flat
        # the fused kernel divides each head's gradient by its `grad_scale`: 1 / clip_grad_norm_'s factor
        norms = torch.linalg.vector_norm(self.grad, dim=1)
        torch.clamp((norms + 1e-6) / self.clip, min=1.0, out=self.scales)
        shrink = 1 - self.lrs[self.steps] * self.weight_decay  # decoupled weight decay, as AdamW's
        flat[:, : self.model.decayed].mul_(shrink[:, None])
        self.step_counts += 1
        for lr, (param, grad, exp_avg, exp_avg_sq, scale, count) in zip(
            self.lr_table[self.steps], self.rows, strict=True
        ):
            fused_adamw(param, grad, exp_avg, exp_avg_sq, count, lr=lr, betas=BETAS, eps=EPS, grad_scale=scale)
        self.steps += 1

    def write_back(self) -> None:
        self.model.write_back([head.probe for head in self.heads])


def eval_modules(probes: list[Probe]) -> tuple[list[nn.Module], list[int]]:
    """Modules that compute all `probes`' logits, stacked where they can be, and the order of the
    heads they output (`order[j]`: which probe output j is)."""
    modules: list[nn.Module] = []
    order: list[int] = []
    for group in group_heads(probes):
        members = [probes[i] for i in group]
        modules.append(members[0] if len(members) == 1 else StackedModel(members, _device(members[0])))
        order.extend(group)
    return modules, order


def _device(probe: Probe) -> torch.device:
    first = next(iter(probe.parameters()), None)
    return torch.device("cpu") if first is None else first.device
