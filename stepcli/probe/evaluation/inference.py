"""Evaluating a probe on cached clips, optionally under several frame orders at once.

Reading tokens is the slow part of evaluating a small probe, so `predict_logits` reads each
batch once and applies every requested frame order to it in memory: a K-permutation shuffle test
costs one read plus K cheap forwards, and never touches the backbone. Under torchrun `evaluate`
splits the clips across the processes and gathers the logits, so every process computes the same
metrics (and picks the same best epoch) from all of them.

A clip with several cached views (temporal clips x spatial crops) is scored as in the multi-view
test of V-JEPA and SlowFast: the softmax is averaged over its views, every view in the same frame
order; the logits returned are the log of that average, so argmax and cross-entropy read it as
they read one view's logits. A clip with one view gets its logits as they are.

A probe reads batches of at least the caller's size (`Probe.eval_batch_size`: kNN's cost per clip
falls with more queries per call), and a fitted probe may already hold the logits of the rows it
was fitted on (`Probe.fitted_logits`: kNN's validation split), which are then not read again.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from stepcli.cache.reader import FeatureCache
from stepcli.distributed import Group
from stepcli.errors import StepcliError
from stepcli.probe.data import fixed_batches, iterate_batches
from stepcli.probe.evaluation.metrics import classification_metrics
from stepcli.probe.models.base import Probe


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 on CPU, where bf16 is slower and less exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_orders(
    frame_orders: list[np.ndarray] | None, num_frames: int, frame_maps: bool = False
) -> list[torch.Tensor | None]:
    """Each order as an index tensor: a permutation of `range(T)`, or with `frame_maps` any T indices
    into it (a frame may repeat and another go missing, e.g. frame t replaced by a copy of t-1)."""
    if frame_orders is None:
        return [None]
    orders = []
    for order in frame_orders:
        order = np.asarray(order, dtype=np.int64)
        if frame_maps:
            if order.shape != (num_frames,) or order.min() < 0 or order.max() >= num_frames:
                raise StepcliError(f"frame map {order.tolist()} needs {num_frames} indices in 0..{num_frames - 1}")
        elif sorted(order.tolist()) != list(range(num_frames)):
            raise StepcliError(f"frame order {order.tolist()} is not a permutation of the {num_frames} frames")
        orders.append(torch.as_tensor(order.copy()))
    return orders


@torch.no_grad()
def head_logits(
    probes: list[nn.Module],
    cache: FeatureCache,
    rows: np.ndarray | list[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    frame_orders: list[np.ndarray] | None = None,
    workers: int = 0,
    frame_maps: bool = False,
) -> np.ndarray:
    """Logits `[H, K, len(rows), C]` float32 of H `probes` (heads of a sweep) under K `frame_orders`,
    averaged over each clip's views (see the module docstring).

    The one place evaluation reads tokens: each batch is read, moved and cast once for every head
    and order. Each order is a permutation of `range(T)` (with `frame_maps`, any index map into it):
    order `o` feeds frames `tokens[:, o]`.
    """
    device = torch.device(device)
    rows = np.asarray(rows, dtype=np.int64)
    orders = _check_orders(frame_orders, cache.clip_shape[0], frame_maps)
    num_classes = {probe.num_classes for probe in probes}
    if len(num_classes) != 1:
        raise StepcliError(f"heads evaluated together must share their classes, got {sorted(num_classes)}")
    item_rows, item_views, owner = cache.view_items(rows)
    if len(item_rows) == len(rows):  # one view per clip
        return _item_logits(probes, cache, rows, None, batch_size, device, orders, workers)
    logits = _item_logits(probes, cache, item_rows, item_views, batch_size, device, orders, workers)
    return average_views(logits, owner, len(rows))


def average_views(logits: np.ndarray, owner: np.ndarray, num_clips: int) -> np.ndarray:
    """Logits `[..., V, C]` of V views, view v of clip `owner[v]` -> `[..., num_clips, C]`: the log of
    each clip's softmax averaged over its views (the multi-view test; see the module docstring)."""
    probs = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(dim=-1).numpy().astype(np.float64)
    lead = probs.shape[:-2]
    summed = np.zeros((*lead, num_clips, probs.shape[-1]))
    np.add.at(summed, (*(slice(None) for _ in lead), owner), probs)
    mean = summed / np.bincount(owner, minlength=num_clips)[:, None]
    return np.log(np.maximum(mean, np.finfo(np.float32).tiny)).astype(np.float32)


def _item_logits(
    probes: list[nn.Module], cache: FeatureCache, rows: np.ndarray, views: np.ndarray | None, batch_size: int,
    device: torch.device, orders: list[torch.Tensor | None], workers: int,
) -> np.ndarray:  # fmt: skip
    """Logits `[H, K, len(rows), C]` of one view per row (`views`, or view 0) under each frame order;
    a module of K stacked heads (`stacked_heads`) fills K of the H. Batches of `batch_size` clips, or
    more where a probe asks for more (`Probe.eval_batch_size`); logits a probe's `fit` already
    computed for these rows (`Probe.fitted_logits`) are taken as they are."""
    widths = [getattr(probe, "stacked_heads", 1) for probe in probes]  # a stacked module outputs `[K, B, C]`
    out = np.empty((sum(widths), len(orders), len(rows), probes[0].num_classes), dtype=np.float32)
    firsts = np.cumsum([0, *widths[:-1]])
    computed = []
    for h, width, probe in zip(firsts, widths, probes, strict=True):
        known = _fitted_logits(probe, cache, rows, views, orders)
        if known is None:
            computed.append((h, width, probe))
        else:
            out[h, 0] = known
    if not computed:
        return out
    batch_size = max([batch_size, *(p.eval_batch_size(batch_size) for _, _, p in computed if isinstance(p, Probe))])
    modes = [probe.training for probe in probes]
    for probe in probes:
        probe.eval()
    start = 0
    view_batches = None if views is None else fixed_batches(views, batch_size)
    for tokens, _ in iterate_batches(cache, fixed_batches(rows, batch_size), workers, view_batches):
        tokens = tokens.to(device, non_blocking=True)
        for k, order in enumerate(orders):
            x = tokens if order is None else tokens[:, order.to(device)]
            for h, width, probe in computed:
                with autocast(device):
                    logits = probe(x)
                out[h : h + width, k, start : start + len(tokens)] = logits.float().cpu().numpy()
        start += len(tokens)
    for probe, mode in zip(probes, modes, strict=True):
        probe.train(mode)
    return out


def _fitted_logits(
    probe: nn.Module, cache: FeatureCache, rows: np.ndarray, views: np.ndarray | None, orders: list[torch.Tensor | None]
) -> np.ndarray | None:
    """`probe.fitted_logits` where it can apply: a probe (not a stacked module), view 0 of clips that
    have no other, the original frame order alone."""
    if not isinstance(probe, Probe) or views is not None or len(orders) != 1 or orders[0] is not None:
        return None
    return probe.fitted_logits(cache, rows)


def predict_logits(
    probe: nn.Module,
    cache: FeatureCache,
    rows: np.ndarray | list[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    frame_orders: list[np.ndarray] | None = None,
    workers: int = 0,
    frame_maps: bool = False,
) -> np.ndarray:
    """Logits `[K, len(rows), C]` float32 for the K `frame_orders` (None: original order, K = 1)."""
    return head_logits([probe], cache, rows, batch_size=batch_size, device=device, frame_orders=frame_orders,
                       workers=workers, frame_maps=frame_maps)[0]  # fmt: skip


def evaluate_heads(
    probes: list[nn.Module],
    cache: FeatureCache,
    rows: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 0,
    group: Group | None = None,
    intervals: bool = False,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> list[dict]:
    """`classification_metrics` of each probe on cache `rows` in their original frame order, one read.

    With a `group` of several processes each predicts `rows[rank::world_size]`; all get the metrics.
    `intervals` adds the bootstrap confidence intervals (for final numbers, not every epoch).
    `labels` and `class_names` (default: the cache's) are the probe's, for a cache whose classes
    are listed in another order (`stepcli evaluate`)."""
    if group is None or group.world_size == 1:
        logits = head_logits(probes, cache, rows, batch_size=batch_size, device=device, workers=workers)[:, 0]
    else:
        mine = rows[group.rank :: group.world_size]
        part = head_logits(probes, cache, mine, batch_size=batch_size, device=device, workers=workers)[:, 0]
        gathered = group.gather_rows(torch.from_numpy(part).transpose(0, 1).contiguous().to(group.device), len(rows))
        logits = gathered.transpose(0, 1).cpu().numpy()
    labels = cache.labels[rows] if labels is None else labels
    names = cache.class_names if class_names is None else class_names
    return [classification_metrics(h, labels, names, intervals=intervals) for h in logits]


def evaluate(
    probe: nn.Module,
    cache: FeatureCache,
    rows: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 0,
    group: Group | None = None,
    intervals: bool = False,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> dict:
    """`evaluate_heads` of one probe."""
    return evaluate_heads([probe], cache, rows, batch_size=batch_size, device=device, workers=workers, group=group,
                          intervals=intervals, labels=labels, class_names=class_names)[0]  # fmt: skip
