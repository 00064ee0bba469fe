"""Classification metrics for probes: top-1 (top-5 when C > 5), mean per-class accuracy, per-class
accuracy, confusion, and bootstrap confidence intervals.

Mean per-class accuracy is reported beside top-1 because real video datasets (SSv2, Drive&Act)
are long-tailed: top-1 rewards the head classes, the per-class mean weighs every class equally.
The 95% intervals resample the evaluated clips with a fixed seed (percentile bootstrap): small
test splits (IKEA-ASM, Drive&Act) leave wide error bars that a single number hides, and a fixed
seed keeps the interval reproducible. Values are rounded to 6 decimals so that metrics.json is
byte-identical across identical runs.

Every number stage two reports comes from here: a run's metrics.json, each frame order of the
shuffle test, the comparison table, the spread over seeds and over shuffled orders. A spread is
the sample standard deviation (n - 1 in the denominator, `STD_DDOF`), named so in every table.
"""

from __future__ import annotations

import numpy as np

DECIMALS = 6
TOP5_MIN_CLASSES = 6  # top-5 is only informative with more than 5 classes
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0
# resampled clip indices held at once (int64): all 1000 resamples of 27,157 SSv2 test clips take 217 MB,
# and as many again for each array made from them
BOOTSTRAP_DRAW_BYTES = 16 << 20
STD_DDOF = 1  # sample std: the spread of a few seeds or permutations estimates that of all of them
STD_NAME = "sample std (n-1)"


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """`[C, C]` counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(preds)), 1)
    return matrix


def top1(labels: np.ndarray, preds: np.ndarray) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if len(labels) else float("nan")


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """`[C]` recall per class; NaN for a class with no clips."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean of the per-class accuracies over the classes that have clips."""
    accuracy = per_class_accuracy(confusion)
    present = ~np.isnan(accuracy)
    return float(accuracy[present].mean()) if present.any() else float("nan")


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of `logits [n, C]` against `labels [n]`, computed stably."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")


def rounded(value: float | None) -> float | None:
    """`value` to `DECIMALS` places; None for a missing or NaN value (JSON has no NaN)."""
    return None if value is None or np.isnan(value) else round(float(value), DECIMALS)


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (`STD_DDOF`; 0 for one value) of the values that are not None."""
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(present):
        return None, None
    std = present.std(ddof=STD_DDOF) if len(present) > STD_DDOF else 0.0
    return rounded(present.mean()), rounded(std)


def spread(values: list[float | None]) -> tuple[float | None, ...]:
    """Mean, sample std, min and max of the values that are not None (all None when there are none)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None, None, None
    return (*mean_std(present), rounded(min(present)), rounded(max(present)))


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """`[n]` bool: the true class is among the `k` highest logits (ties broken by class index)."""
    logits = np.asarray(logits)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def bootstrap_intervals(
    correct: np.ndarray, labels: np.ndarray, num_classes: int, *, samples: int = BOOTSTRAP_SAMPLES,
    level: float = BOOTSTRAP_LEVEL, seed: int = BOOTSTRAP_SEED,
) -> dict[str, list[float | None]]:  # fmt: skip
    """Percentile-bootstrap intervals of top-1 and mean per-class accuracy over the clips.

    `correct [n]` is 1/0 per clip (or a fraction, e.g. over several frame orders); each resample
    draws n clips with replacement, and its mean per-class accuracy averages the classes drawn.
    """
    correct, labels = np.asarray(correct, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = len(correct)
    if n == 0:
        return {"top1": [None, None], "mean_class_accuracy": [None, None]}
    rng = np.random.default_rng([seed, n])
    top, hits = np.empty(samples), np.empty((samples, num_classes))
    clips = np.empty((samples, num_classes), dtype=np.int64)
    step = max(1, BOOTSTRAP_DRAW_BYTES // (8 * n))  # resamples drawn at once: the same stream as all at once
    for start in range(0, samples, step):
        m = min(step, samples - start)
        draws = rng.integers(0, n, size=(m, n))
        top[start : start + m] = correct[draws].mean(axis=1)
        # per resample and class: hits and clips, [m, C]
        offsets = (np.arange(m)[:, None] * num_classes + labels[draws]).ravel()
        size = m * num_classes
        hits[start : start + m] = np.bincount(offsets, weights=correct[draws].ravel(), minlength=size).reshape(m, -1)
        clips[start : start + m] = np.bincount(offsets, minlength=size).reshape(m, -1)
    with np.errstate(invalid="ignore"):
        per_class = np.nanmean(np.where(clips > 0, hits / np.maximum(clips, 1), np.nan), axis=1)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {
        "top1": [rounded(v) for v in np.percentile(top, tails)],
        "mean_class_accuracy": [rounded(v) for v in np.percentile(per_class, tails)],
    }


def accuracy(logits: np.ndarray, labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    """The accuracies of predictions `preds [n]` (with their `logits [n, C]`): `top1`, `top5` (None
    with 5 classes or fewer), `mean_class_accuracy`, `per_class` `[C]` (NaN: no clips) and
    `confusion` `[C, C]`. The shuffle test passes its own tie-stable predictions; runs, the argmax."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds)
    confusion = confusion_matrix(labels, preds, num_classes)
    has_top5 = num_classes >= TOP5_MIN_CLASSES and len(labels) > 0
    return {
        "top1": rounded(top1(labels, preds)),
        "top5": rounded(topk_hits(logits, labels, 5).mean()) if has_top5 else None,
        "mean_class_accuracy": rounded(mean_class_accuracy(confusion)),
        "per_class": per_class_accuracy(confusion),
        "confusion": confusion,
    }


def pair_metrics(logits: np.ndarray, labels: np.ndarray, preds: np.ndarray, partners: dict) -> dict:
    """On the clips of nearly-symmetric pairs (`partners`: class -> its partner classes): `pair_top1`,
    `pair_partner_rate` (predicted as a partner) and `pair_direction` (the own class's logit beats
    every partner's, whatever else is predicted); None when no clip is in a pair."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds)
    in_pair = np.asarray([int(y) in partners for y in labels], dtype=bool)
    if not in_pair.any():
        return {"pair_top1": None, "pair_partner_rate": None, "pair_direction": None}
    partner_hit = np.asarray([int(p) in partners.get(int(y), ()) for y, p in zip(labels, preds, strict=True)])
    direction = np.asarray(
        [m and logits[i, y] > max(logits[i, q] for q in partners[int(y)]) for i, (y, m) in
         enumerate(zip(labels, in_pair, strict=True))]
    )  # fmt: skip
    return {
        "pair_top1": rounded((preds == labels)[in_pair].mean()),
        "pair_partner_rate": rounded(partner_hit[in_pair].mean()),
        "pair_direction": rounded(direction[in_pair].mean()),
    }


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: list[str], *, intervals: bool = False
) -> dict:
    """Everything a run reports for one split, JSON-ready; `logits [n, C]`, `labels [n]`.

    Per-class accuracy is keyed by class name (None for a class absent from the split); `top5`
    only when there are more than 5 classes; `ci95` (bootstrap intervals) with `intervals`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(logits).argmax(axis=1)
    scores = accuracy(logits, labels, preds, len(class_names))
    metrics = {
        "num_clips": int(len(labels)),
        "top1": scores["top1"],
        "mean_class_accuracy": scores["mean_class_accuracy"],
        "loss": rounded(cross_entropy(logits, labels)),
        "per_class_accuracy": {name: rounded(a) for name, a in zip(class_names, scores["per_class"], strict=True)},
        "confusion_matrix": scores["confusion"].tolist(),
    }
    if len(class_names) >= TOP5_MIN_CLASSES:
        metrics["top5"] = scores["top5"]
    if intervals:
        ci = bootstrap_intervals(preds == labels, labels, len(class_names))
        metrics["ci95"] = {**ci, "samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED}
    return metrics
