"""bench/scale.py kept working: a small synthetic SSv2 cache (SSv2's split proportions, 174
classes, 20 order-only pairs) written by the real writer, and a few commands measured on it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env

from stepcli.cache.reader import FeatureCache

SCALE = Path(__file__).parents[1] / "bench" / "scale.py"
MEASURED = ("open+index", "train knn", "train step (streamed)", "shuffle-test K=2")


def _scale_module():
    spec = importlib.util.spec_from_file_location("scale", SCALE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scale", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scale_bench_writes_ssv2_proportions_and_measures_commands(tmp_path: Path) -> None:
    scale = _scale_module()
    out = tmp_path / "scale"
    command = [sys.executable, str(SCALE), "--clips", "1200", "--out", str(out), "--permutations", "2",
               "--only", ",".join(MEASURED)]  # fmt: skip
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["commands"]) == {"write", *MEASURED}
    for name, measured in summary["commands"].items():
        assert measured["wall_s"] > 0 and measured["peak_rss_mb"] > 50, name
    cache = FeatureCache(out / "cache")
    sizes = {split: len(cache.rows(split)) for split in ("train", "val", "test")}
    assert sizes == scale.split_sizes(1200) and summary["clips"] == len(cache) == sum(sizes.values())
    assert sizes["train"] > 5 * sizes["val"] and len(cache.class_names) == 174 and len(cache.manifest.pairs) == 20
    assert cache.clip_shape == (8, 5, 384)
    knn = json.loads((out / "runs" / "knn" / "metrics.json").read_text())
    assert knn["top1"] > 10 / 174  # learnable: far above chance
    shuffled = json.loads((out / "runs" / "step" / "shuffle" / "results.json").read_text())
    assert shuffled["permutations"] == 2
