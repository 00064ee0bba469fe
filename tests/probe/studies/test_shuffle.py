"""`stepcli shuffle-test`: frame orders, flip rate, pair metrics, results.json, PNG, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fails, write_reversal_cache

from stepcli.cache.format import Manifest
from stepcli.cli import cli
from stepcli.probe.studies.results import METRIC_KEYS, ORIGINAL, REVERSED, SHUFFLED, ShuffleResult
from stepcli.probe.studies.shuffle import (
    ShuffleConfig,
    frame_orders,
    shuffle_test,
    shuffle_test_logits,
)
from stepcli.probe.training.loop import TrainConfig, train_probe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(demo_cache: Path, tmp_path_factory) -> dict[str, Path]:
    """Order-blind probes and STEP, one quick epoch each on the demo cache."""
    root = tmp_path_factory.mktemp("shuffle-runs")
    for name in ("linear", "attentive", "step"):
        train_probe(TrainConfig(cache=demo_cache, probe=name, out=root / name, epochs=1, batch_size=8))
    return {name: root / name for name in ("linear", "attentive", "step")}


def test_frame_orders_are_seeded_permutations() -> None:
    orders = frame_orders(8, 20, seed=3)
    assert list(orders)[:2] == [ORIGINAL, REVERSED] and len(orders) == 22
    assert orders[ORIGINAL].tolist() == list(range(8)) and orders[REVERSED].tolist() == list(range(7, -1, -1))
    for name, order in list(orders.items())[2:]:
        assert sorted(order.tolist()) == list(range(8)) and order.tolist() != list(range(8)), name
    again = frame_orders(8, 20, seed=3)
    assert all(np.array_equal(orders[k], again[k]) for k in orders)
    assert not np.array_equal(frame_orders(8, 1, seed=4)["shuffle-01"], orders["shuffle-01"])


@pytest.mark.parametrize("name", ["linear", "attentive"])
def test_order_blind_probe_never_flips(runs: dict[str, Path], demo_cache: Path, name: str) -> None:
    result = shuffle_test(runs[name], demo_cache, ShuffleConfig(permutations=5))
    assert [o.metrics.flip_rate for o in result.per_order] == [0.0] * 7
    for key in ("top1", "mean_class_accuracy", "pair_top1", "pair_partner_rate"):
        assert len({getattr(o.metrics, key) for o in result.per_order}) == 1, key
    assert all(c.change_reversed == 0 and c.change_shuffled == 0 for c in result.per_class.values())
    assert ShuffleResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def _pair_logits(labels: np.ndarray, partner: dict[int, int], orders: int, num_classes: int) -> np.ndarray:
    """An ideal order-aware probe: right in the original order; reversed, pairs turn into partners."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 0.1, (orders, len(labels), num_classes))
    for i, y in enumerate(labels):
        logits[0, i, y] += 5
        logits[1, i, partner.get(y, y)] += 5
        logits[2:, i, rng.integers(num_classes)] += 5
    return logits


def test_pair_metrics_of_an_order_aware_probe() -> None:
    names = ["open", "close", "grow", "shrink", "static"]
    pairs = [("open", "close"), ("grow", "shrink")]
    partner = {0: 1, 1: 0, 2: 3, 3: 2}
    labels = np.repeat(np.arange(5), 4)
    orders = frame_orders(8, 6, seed=0)
    result = shuffle_test_logits(_pair_logits(labels, partner, len(orders), 5), labels, orders, names, pairs)
    original, reverse = result.original, result.reversed
    assert original.top1 == 1.0 and original.pair_top1 == 1.0 and original.pair_direction == 1.0
    assert reverse.pair_top1 == 0.0 and reverse.pair_partner_rate == 1.0
    assert reverse.pair_direction == 0.0
    assert reverse.top1 == pytest.approx(4 / 20) and reverse.flip_rate == pytest.approx(16 / 20)
    assert result.shuffled.top1.mean < 0.6
    assert not result.per_class["static"].in_pair and result.per_class["static"].reversed == 1.0
    assert result.per_class["open"].change_reversed == -1.0
    assert np.trace(np.asarray(result.confusion_matrix)) == 20
    intervals = result.intervals
    assert intervals[ORIGINAL]["top1"] == [1.0, 1.0] and intervals[REVERSED]["pair_top1"] == [0.0, 0.0]
    low, high = intervals[REVERSED]["top1"]
    assert low < reverse.top1 < high and set(intervals) == {ORIGINAL, REVERSED, SHUFFLED}
    assert intervals[SHUFFLED]["top1"][0] <= result.shuffled.top1.mean <= intervals[SHUFFLED]["top1"][1]


def test_step_on_a_reversed_pair_task(tmp_path: Path) -> None:
    cache = write_reversal_cache(tmp_path / "cache")
    config = TrainConfig(cache=cache, probe="step", out=tmp_path / "step", epochs=10, lr=1e-2, batch_size=8)
    run = train_probe(config)
    s = shuffle_test(run, cache, ShuffleConfig(permutations=10))
    assert s.original.pair_top1 >= 0.9, s
    assert s.reversed.pair_top1 <= 0.1 and s.reversed.pair_partner_rate >= 0.9, s
    assert s.reversed.flip_rate >= 0.7 and s.shuffled.flip_rate.mean > 0, s


def test_cli_writes_results_png_and_table(runs: dict[str, Path], demo_cache: Path, tmp_path: Path) -> None:
    import matplotlib.image

    out = tmp_path / "shuffle"
    args = ["shuffle-test", "--run", str(runs["step"]), "--permutations", "4", "--seed", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| frame order | top-1 |" in result.output and "shuffled (mean of 4" in result.output
    data = json.loads((out / "results.json").read_text())
    assert {"run", "probe", "num_params", "cache", "num_clips", "num_frames", "permutations", "seed", "pairs",
            "pairs_source", "class_names", "summary", "per_order", "per_class", "confusion_matrix"} <= set(data)  # fmt: skip
    assert data["probe"] == "step" and data["permutations"] == 4 and data["seed"] == 1 and len(data["pairs"]) == 6
    assert [o["order"] for o in data["per_order"]] == [ORIGINAL, REVERSED, *[f"shuffle-0{k}" for k in range(1, 5)]]
    assert all(set(METRIC_KEYS) <= set(o) for o in data["per_order"]) and set(data["summary"]) == {
        ORIGINAL,
        REVERSED,
        SHUFFLED,
    }
    assert set(data["per_class"]) == set(data["class_names"])
    image = matplotlib.image.imread(out / "shuffle.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0
    default = CliRunner().invoke(cli, ["shuffle-test", "--run", str(runs["linear"]), "--permutations", "2"])
    assert default.exit_code == 0 and (runs["linear"] / "shuffle" / "results.json").is_file()


def test_pairs_file(runs: dict[str, Path], demo_cache: Path, tmp_path: Path) -> None:
    good = tmp_path / "pairs.txt"
    good.write_text("# one pair\nopen,close\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["shuffle-test", "--run", str(runs["linear"]), "--pairs", str(good),
                                      "--permutations", "2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["pairs"] == [["open", "close"]] and data["pairs_source"] == str(good)
    assert [c for c, v in data["per_class"].items() if v["in_pair"]] == ["open", "close"]
    bad = tmp_path / "bad.txt"
    bad.write_text("open,closing\n")
    line = fails("shuffle-test", "--run", runs["linear"], "--pairs", str(bad))
    assert "'closing'" in line and "class list" in line
    assert "not found" in fails("shuffle-test", "--run", runs["linear"], "--pairs", str(tmp_path / "none"))


def test_run_cache_mismatch_and_bad_run(runs: dict[str, Path], demo_cache: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(demo_cache, other)
    manifest = Manifest.load(other)
    replace(manifest, extraction=replace(manifest.extraction, layer=-2)).save(other)
    line = fails("shuffle-test", "--run", runs["step"], "--cache", str(other))
    assert "another extraction" in line and "layer" in line
    assert "not a complete stepcli run" in fails("shuffle-test", "--run", str(tmp_path))
    assert "not a stepcli cache" in fails("shuffle-test", "--run", runs["step"], "--cache", str(tmp_path))
    assert "--permutations" in fails("shuffle-test", "--run", runs["step"], "--permutations", "-1")
