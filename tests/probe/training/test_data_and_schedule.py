"""Training paths that the demo does not take: the learning-rate schedule, the split fallbacks,
`--train-fraction`, logreg on two classes and `predict` on a logreg run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import fails, ok, write_synthetic_cache
from hypothesis import given
from hypothesis import strategies as st

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.probe.data import VAL_FROM_TRAIN, resolve_splits
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.training.optimizer import warmup_cosine

pytestmark = pytest.mark.usefixtures("one_thread")


@given(warmup=st.integers(1, 50), after=st.integers(1, 500))
def test_warmup_cosine_ramps_then_decays_to_zero(warmup: int, after: int) -> None:
    total = warmup + after
    factor = warmup_cosine(warmup, total)
    ramp = [factor(s) for s in range(warmup)]
    assert ramp == sorted(ramp) and ramp[-1] == 1.0 and ramp[0] == pytest.approx(1 / warmup)
    decay = [factor(s) for s in range(warmup, total + 1)]
    assert decay[0] == 1.0 and decay[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert factor(total + 10) == pytest.approx(0.0, abs=1e-12)  # never negative past the end


def _cache(tmp_path: Path, splits_of: list[str], per_class: int = 10, classes: int = 3) -> FeatureCache:
    labels = [c for c in range(classes) for _ in range(per_class)]
    splits = [splits_of[i % len(splits_of)] for i in range(len(labels))]
    names = [f"class{c}" for c in range(classes)]
    return FeatureCache(write_synthetic_cache(tmp_path / "cache", labels, splits, names))


def test_a_cache_without_splits_gets_a_seeded_stratified_split(tmp_path: Path) -> None:
    cache = _cache(tmp_path, [""])
    splits = resolve_splits(cache, seed=0)
    assert splits.source == "seeded-stratified-60/20/20"
    for rows, share in ((splits.train, 6), (splits.val, 2), (splits.test, 2)):
        assert Counter(cache.labels[rows].tolist()) == {0: share, 1: share, 2: share}
    everything = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(everything.tolist()) == list(range(len(cache)))
    assert np.array_equal(resolve_splits(cache, seed=0).test, splits.test)
    assert not np.array_equal(resolve_splits(cache, seed=1).test, splits.test)


def test_a_cache_without_val_holds_out_part_of_train(tmp_path: Path) -> None:
    cache = _cache(tmp_path, ["train", "train", "train", "train", "test"])
    splits = resolve_splits(cache, seed=0)
    assert splits.source == "cache+val-from-train" and splits.notes
    assert np.array_equal(splits.test, cache.rows("test"))
    train_per_class = 8
    held = round(VAL_FROM_TRAIN * train_per_class)
    assert Counter(cache.labels[splits.val].tolist()) == {0: held, 1: held, 2: held}
    assert not set(splits.val.tolist()) & set(splits.train.tolist())
    assert set(splits.val.tolist()) | set(splits.train.tolist()) == set(cache.rows("train").tolist())


def test_a_cache_without_test_is_an_error_naming_the_counts(tmp_path: Path) -> None:
    cache = _cache(tmp_path, ["train", "val"])
    with pytest.raises(StepcliError, match="no 'test' clips.*train 15, val 15"):
        resolve_splits(cache, seed=0)
    line = fails("train-probe", "--cache", cache.path, "--probe", "linear", "--out", tmp_path / "run")
    assert "no 'test' clips" in line and not (tmp_path / "run").exists()


def test_train_fraction_keeps_that_share_of_each_class(tmp_path: Path) -> None:
    cache = _cache(tmp_path, ["train", "train", "train", "val", "test"], per_class=20)
    out = tmp_path / "run"
    ok("train-probe", "--cache", cache.path, "--probe", "linear", "--out", out, "--epochs", "1",
       "--train-fraction", "0.25", "-q")  # fmt: skip
    train_ids = json.loads((out / "splits.json").read_text())["train"]
    row_of = {clip_id: row for row, clip_id in enumerate(cache.clip_ids)}
    per_class = Counter(int(cache.labels[row_of[i]]) for i in train_ids)
    assert per_class == {0: 3, 1: 3, 2: 3}  # round(0.25 * 12) of each class's 12 train clips
    assert set(train_ids) <= {cache.clip_ids[r] for r in cache.rows("train")}


def test_logreg_on_two_classes_matches_scikit_learn(tmp_path: Path) -> None:
    """scikit-learn keeps one coefficient row for a binary problem; the probe must still rank right."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cache = _cache(tmp_path, ["train", "train", "train", "val", "test"], per_class=20, classes=2)
    out = tmp_path / "run"
    ok("train-probe", "--cache", cache.path, "--probe", "logreg", "--out", out, "-q")
    run = load_run(out, cache)
    rows = run.rows(cache, "test")
    logits = predict_logits(run.probe, cache, rows)[0]
    features = lambda r: np.stack([cache.tokens([i])[0][:, 0].astype(np.float64).mean(0) for i in r])  # noqa: E731
    metrics = json.loads((out / "metrics.json").read_text())
    c = metrics["C"]
    scaler = StandardScaler().fit(features(run.rows(cache, "train")))
    model = LogisticRegression(C=c, max_iter=2000, random_state=0).fit(
        scaler.transform(features(run.rows(cache, "train"))), cache.labels[run.rows(cache, "train")]
    )
    expected = model.predict(scaler.transform(features(rows)))
    assert np.array_equal(logits.argmax(1), expected)
    assert metrics["top1"] == pytest.approx(float((expected == cache.labels[rows]).mean()))
