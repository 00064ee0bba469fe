"""A version-1 cache written by the code before cache v2 still trains and shuffle-tests unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import DATA, ok

from stepcli.cache.reader import FeatureCache


@pytest.fixture
def v1_cache(tmp_path) -> Path:
    """A copy, so that nothing a test does can change the kept files."""
    return Path(shutil.copytree(DATA / "cache_v1", tmp_path / "cache_v1"))


def test_v1_cache_reads_as_one_view_one_layer(v1_cache):
    cache = FeatureCache(v1_cache)
    assert cache.manifest.schema_version == 1
    assert len(cache) == 48 and cache.clip_shape == (4, 5, 64)
    assert cache.tokens([0, 3]).shape == (2, 4, 5, 64)


def _holds(actual, expected) -> bool:
    """Every key of `expected` is in `actual` with the same value; later versions may add keys
    (confidence intervals, top-5), never change what was there."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _holds(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_holds, actual, expected))
    return actual == expected


@pytest.mark.parametrize("probe", ["linear", "step"])
def test_v1_cache_trains_and_shuffle_tests_as_before(v1_cache, tmp_path, probe, one_thread):
    expected = json.loads((DATA / "cache_v1_expected" / f"{probe}.json").read_text())
    run = tmp_path / probe
    ok("-q", "train-probe", "--cache", v1_cache, "--probe", probe, "--out", run, "--epochs", 2, "--device", "cpu")
    ok("-q", "shuffle-test", "--run", run, "--permutations", 3, "--device", "cpu")
    assert _holds(json.loads((run / "metrics.json").read_text()), expected["metrics"])
    shuffle = json.loads((run / "shuffle" / "results.json").read_text())
    for key in ("run", "cache"):
        shuffle.pop(key)
    assert _holds(shuffle, expected["shuffle"])
