"""Top-5 and the bootstrap intervals of metrics.json and the shuffle test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ok

from stepcli.probe.evaluation.metrics import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_intervals,
    classification_metrics,
)
from stepcli.probe.runs.rundir import load_run


def _logits(labels: np.ndarray, num_classes: int, rank_of_truth: np.ndarray) -> np.ndarray:
    """Logits whose true class comes at position `rank_of_truth` (0 = argmax) for each clip."""
    logits = np.tile(-np.arange(num_classes, dtype=np.float64), (len(labels), 1))
    for i, (y, r) in enumerate(zip(labels, rank_of_truth, strict=True)):
        others = [c for c in range(num_classes) if c != y]
        order = others[:r] + [y] + others[r:]
        logits[i, order] = -np.arange(num_classes)
    return logits


def test_top5_only_with_more_than_five_classes() -> None:
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    ranks = np.array([0, 1, 4, 5, 3, 7, 2, 6])
    metrics = classification_metrics(_logits(labels, 8, ranks), labels, [f"c{i}" for i in range(8)])
    assert metrics["top1"] == pytest.approx(1 / 8) and metrics["top5"] == pytest.approx(5 / 8)
    few = classification_metrics(_logits(labels % 5, 5, ranks % 5), labels % 5, [f"c{i}" for i in range(5)])
    assert "top5" not in few and "ci95" not in few


def _loop_bootstrap(correct: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """The same resamples, one at a time: top-1 and the mean over the classes drawn."""
    n = len(correct)
    draws = np.random.default_rng([BOOTSTRAP_SEED, n]).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    tops, means = [], []
    for idx in draws:
        tops.append(correct[idx].mean())
        means.append(np.mean([correct[idx][labels[idx] == c].mean() for c in np.unique(labels[idx])]))
    return tops, means


def test_bootstrap_matches_a_plain_loop_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 60)
    correct = (rng.random(60) < np.array([0.9, 0.5, 0.7, 0.2])[labels]).astype(float)
    ci = bootstrap_intervals(correct, labels, 4)
    tops, means = _loop_bootstrap(correct, labels)
    np.testing.assert_allclose(ci["top1"], np.percentile(tops, [2.5, 97.5]), atol=1e-6)
    np.testing.assert_allclose(ci["mean_class_accuracy"], np.percentile(means, [2.5, 97.5]), atol=1e-6)
    assert bootstrap_intervals(correct, labels, 4) == ci
    assert ci["top1"][0] < correct.mean() < ci["top1"][1]


def test_bootstrap_narrows_with_more_clips() -> None:
    small = np.tile([1.0, 0.0], 10)
    large = np.tile([1.0, 0.0], 1000)
    width = [np.diff(bootstrap_intervals(c, np.zeros(len(c), int), 1)["top1"])[0] for c in (small, large)]
    assert width[1] < width[0] / 5
    assert bootstrap_intervals(np.ones(30), np.arange(30) % 3, 3)["top1"] == [1.0, 1.0]


def test_run_metrics_carry_intervals_and_top5(demo_cache: Path, tmp_path: Path) -> None:
    ok("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", tmp_path / "r", "--epochs", "1", "-q")
    metrics = load_run(tmp_path / "r").metrics
    for split in (metrics, metrics["val"]):
        low, high = split["ci95"]["top1"]
        assert low <= split["top1"] <= high and 0 <= split["top5"] <= 1 and split["top5"] >= split["top1"]
        assert split["ci95"]["mean_class_accuracy"][0] <= split["mean_class_accuracy"]


def test_shuffle_orders_and_run_metrics_come_from_one_computation() -> None:
    """The comparison table (shuffle test) and metrics.json must agree number for number, and every
    spread is the sample std (n - 1), over seeds as over shuffled orders."""
    import statistics

    from stepcli.probe.evaluation.metrics import classification_metrics, mean_std
    from stepcli.probe.studies.shuffle import frame_orders, shuffle_test_logits

    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(8)]
    labels = rng.integers(0, 8, size=40)
    orders = frame_orders(4, 5, seed=0)
    logits = rng.normal(size=(len(orders), 40, 8)).astype(np.float32)
    report = shuffle_test_logits(logits, labels, orders, names, [("c0", "c1"), ("c2", "c3")])
    run = classification_metrics(logits[0], labels, names)
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert getattr(report.original, key) == run[key], key
    shuffled_top1 = [o.metrics.top1 for o in report.per_order[2:]]
    assert report.shuffled.top1.std == pytest.approx(statistics.stdev(shuffled_top1), abs=1e-6)
    assert mean_std([0.5, 0.7, 0.9])[1] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]), abs=1e-6)
