"""Classification metrics for probes: top-1, mean per-class accuracy, per-class accuracy, confusion.

Mean per-class accuracy is reported beside top-1 because real video datasets (SSv2, Drive&Act)
are long-tailed: top-1 rewards the head classes, the per-class mean weighs every class equally.
Values are rounded to 6 decimals so that metrics.json is byte-identical across identical runs.
"""

from __future__ import annotations

import numpy as np

DECIMALS = 6


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


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), DECIMALS)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Everything a run reports for one split, JSON-ready; `logits [n, C]`, `labels [n]`.

    Per-class accuracy is keyed by class name (None for a class absent from the split).
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(logits).argmax(axis=1)
    confusion = confusion_matrix(labels, preds, len(class_names))
    per_class = per_class_accuracy(confusion)
    return {
        "num_clips": int(len(labels)),
        "top1": _round(top1(labels, preds)),
        "mean_class_accuracy": _round(mean_class_accuracy(confusion)),
        "loss": _round(cross_entropy(logits, labels)),
        "per_class_accuracy": {name: _round(acc) for name, acc in zip(class_names, per_class, strict=True)},
        "confusion_matrix": confusion.tolist(),
    }
