"""The k-NN baseline: fitted on the train split, k and temperature chosen on val, order-blind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, ok

from stepcli.cache.reader import FeatureCache
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import classification_metrics
from stepcli.probe.models.knn import K_GRID, TEMPERATURE_GRID, knn_logits
from stepcli.probe.runs.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_knn_votes_of_the_nearest_clips() -> None:
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])
    query = torch.nn.functional.normalize(torch.tensor([[0.3, 0.95]]), dim=-1)
    assert knn_logits(query, bank, labels, 3, 1, 0.07).argmax().item() == 1  # (0, 1) is the nearest row
    shares = knn_logits(query, bank, labels, 3, 3, 1e3).exp()[0]  # hot: the 3 nearest vote about equally
    assert shares[0].item() == pytest.approx(2 / 3, abs=1e-3) and shares[2].item() < 1e-6


def test_knn_run_fits_loads_and_ignores_frame_order(demo_cache: Path, tmp_path: Path) -> None:
    ok("train-probe", "--cache", demo_cache, "--probe", "knn", "--out", tmp_path / "knn", "--quiet")
    cache = FeatureCache(demo_cache)
    run = load_run(tmp_path / "knn", cache)
    assert run.metrics["num_params"] == 0 and run.metrics["k"] in {min(k, 24) for k in K_GRID}
    assert run.metrics["temperature"] in TEMPERATURE_GRID and len(run.probe.bank) == run.metrics["train_clips"] == 24
    rows = run.rows(cache, "test")
    logits = predict_logits(run.probe, cache, rows, frame_orders=[np.arange(8), np.arange(8)[::-1]])
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    again = classification_metrics(logits[0], cache.labels[rows], cache.class_names)
    assert again["top1"] == run.metrics["top1"] and again["confusion_matrix"] == run.metrics["confusion_matrix"]


def test_knn_trains_on_a_prefix_only_cache(tiny_openclip, tmp_path: Path) -> None:
    """knn reads nothing but the per-frame CLS, which a `--tokens prefix` cache holds."""
    cache = tmp_path / "prefix"
    ok("extract", "--dataset", "demo", "--size", "4", "--out", cache, "--backbone", TINY_BACKBONE, "--image-size",
       TINY_IMAGE_SIZE, "--tokens", "prefix", "--workers", "0", "--quiet")  # fmt: skip
    assert FeatureCache(cache).layout.num_patches == 0
    ok("train-probe", "--cache", cache, "--probe", "knn", "--out", tmp_path / "knn", "--quiet")
    run = load_run(tmp_path / "knn", FeatureCache(cache))
    assert run.metrics["num_params"] == 0 and len(run.probe.bank) == run.metrics["train_clips"]
