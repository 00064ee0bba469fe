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
    probe = run.probe  # the metrics as main computed them, before val was read from the fit: each split's
    for split, metrics in (("val", run.metrics["val"]), ("test", run.metrics)):  # k nearest, one search each
        rows = run.rows(cache, split)
        features = probe.forward_features(torch.from_numpy(cache.tokens(rows)))
        logits = knn_logits(features, probe.bank, probe.bank_labels, probe.num_classes, int(probe.k),
                            float(probe.temperature)).numpy()  # fmt: skip
        expected = classification_metrics(logits, cache.labels[rows], cache.class_names, intervals=True)
        assert {key: metrics[key] for key in expected} == expected, split


def test_knn_trains_on_a_prefix_only_cache(tiny_openclip, tmp_path: Path) -> None:
    """knn reads nothing but the per-frame CLS, which a `--tokens prefix` cache holds."""
    cache = tmp_path / "prefix"
    ok("extract", "--dataset", "demo", "--size", "4", "--out", cache, "--backbone", TINY_BACKBONE, "--image-size",
       TINY_IMAGE_SIZE, "--tokens", "prefix", "--workers", "0", "--quiet")  # fmt: skip
    assert FeatureCache(cache).layout.num_patches == 0
    ok("train-probe", "--cache", cache, "--probe", "knn", "--out", tmp_path / "knn", "--quiet")
    run = load_run(tmp_path / "knn", FeatureCache(cache))
    assert run.metrics["num_params"] == 0 and len(run.probe.bank) == run.metrics["train_clips"]


def _reference_sweep(queries, bank, labels, truth, num_classes: int) -> list[dict]:
    """The grid as computed before chunking: every query against the whole bank, once per (k, temperature)."""
    sweep = []
    for k in sorted({min(k, len(bank)) for k in K_GRID}):
        for temperature in TEMPERATURE_GRID:
            similarity, index = (queries @ bank.T).topk(k, dim=1)
            weights = torch.exp((similarity - similarity[:, :1]) / temperature)
            votes = torch.zeros(len(queries), num_classes).scatter_add_(1, labels[index], weights)
            accuracy = round(float((votes.argmax(dim=1) == truth).float().mean()), 6)
            sweep.append({"k": k, "temperature": temperature, "val_top1": accuracy})
    return sweep


def test_knn_in_chunks_chooses_and_predicts_as_all_at_once(demo_cache: Path, monkeypatch) -> None:
    """Chunking the queries changes neither the sweep, nor the chosen k and temperature, nor a logit."""
    from stepcli.probe.models import knn

    cache = FeatureCache(demo_cache)
    train, val, test = cache.rows("train"), cache.rows("val"), cache.rows("test")
    whole = knn.KnnProbe(cache.layout, len(cache.class_names))
    fitted = whole.fit(cache, train, val, workers=0, seed=0)
    monkeypatch.setattr(knn, "SIMILARITY_BYTES", 4 * len(train) * 5)  # 5 queries per chunk: several, one short
    assert knn.query_chunk(len(train)) == 5 and len(val) % 5 != 0
    chunked = knn.KnnProbe(cache.layout, len(cache.class_names))
    assert chunked.fit(cache, train, val, workers=0, seed=0) == fitted
    queries = chunked.forward_features(torch.from_numpy(cache.tokens(val)))
    truth = torch.from_numpy(cache.labels[val])
    assert fitted["sweep"] == _reference_sweep(queries, whole.bank, whole.bank_labels, truth, whole.num_classes)
    tokens = torch.from_numpy(cache.tokens(test))
    torch.testing.assert_close(chunked(tokens), whole(tokens), rtol=0, atol=0)
    rng = np.random.default_rng(0)  # and on many more queries than a chunk, against the one-matrix formula
    bank = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((50, 6))).float(), dim=-1)
    many = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((23, 6))).float(), dim=-1)
    labels = torch.from_numpy(rng.integers(0, 4, 50))
    similarity, index = (many @ bank.T).topk(7, dim=1)
    expected = knn.vote_logits(similarity, labels[index], 4, 0.1)
    found = knn_logits(many, bank, labels, 4, 7, 0.1, chunk=4)
    assert torch.equal(found.argmax(dim=1), expected.argmax(dim=1))  # BLAS may round a product by one ulp
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-6)


def test_knn_scores_val_once_and_as_a_second_search_would(demo_cache: Path, monkeypatch) -> None:
    """`fit` keeps the chosen (k, temperature)'s val logits and evaluation reads them (no second
    search); they equal bit for bit the probe's logits recomputed on those rows, read in its chunks."""
    from stepcli.probe.models import knn

    cache = FeatureCache(demo_cache)
    train, val, test = cache.rows("train"), cache.rows("val"), cache.rows("test")
    monkeypatch.setattr(knn, "SIMILARITY_BYTES", 4 * len(train) * 5)  # chunks of 5 queries: 12 val in 5, 5, 2
    probe = knn.KnnProbe(cache.layout, len(cache.class_names))
    probe.fit(cache, train, val, workers=0, seed=0)
    assert probe.chunk() == 5 and probe.eval_batch_size(3) == 5 and probe.eval_batch_size(64) == 65
    searches: list[int] = []
    search = knn.nearest
    monkeypatch.setattr(knn, "nearest", lambda queries, *a: searches.append(len(queries)) or search(queries, *a))
    kept = predict_logits(probe, cache, val)[0]
    assert searches == []
    again = knn.KnnProbe(cache.layout, len(cache.class_names))  # the same bank, k and temperature, no fit
    again.load_state_dict(probe.state_dict())
    batches: list[int] = []
    again.register_forward_pre_hook(lambda _, args: batches.append(len(args[0])))
    recomputed = predict_logits(again, cache, val, batch_size=4)[0]
    assert batches == searches == [5, 5, 2]  # batches of the fit's chunks, not of 4
    np.testing.assert_array_equal(kept, recomputed)
    for other in (  # anything else is searched as before: other rows, another order, another cache
        lambda: predict_logits(probe, cache, test),
        lambda: predict_logits(probe, cache, val[:-1]),
        lambda: predict_logits(probe, cache, val, frame_orders=[np.arange(8)[::-1]]),
        lambda: predict_logits(probe, FeatureCache(demo_cache), val),
    ):
        searches.clear()
        other()
        assert searches, other
    np.testing.assert_array_equal(predict_logits(probe, FeatureCache(demo_cache), val)[0], kept)
