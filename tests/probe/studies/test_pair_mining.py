"""`stepcli pairs --from-run`: candidate nearly-symmetric pairs from where STEP sends reversed clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fails, write_reversal_cache

from stepcli.cli import cli
from stepcli.pairs import read_pairs
from stepcli.probe.studies.pair_mining import rank_pairs
from stepcli.probe.training.loop import TrainConfig, train_probe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rank_pairs_symmetrises_and_normalises() -> None:
    names = ["open", "close", "grow", "shrink"]
    confusion = np.array([[0, 3, 0, 0], [4, 0, 1, 0], [0, 0, 5, 2], [0, 0, 1, 9]])
    ranked = rank_pairs(confusion, np.array([4, 5, 8, 10]), names)
    assert [c.pair for c in ranked] == [("open", "close"), ("grow", "shrink"), ("close", "grow")]
    assert (ranked[0].a_to_b, ranked[0].b_to_a, ranked[0].score) == (3, 4, pytest.approx(7 / 9, abs=1e-6))
    assert ranked[1].score == pytest.approx(3 / 18, abs=1e-6)


@pytest.fixture(scope="module")
def reversal_runs(tmp_path_factory) -> dict[str, Path]:
    """A STEP run and an order-blind linear run on a cache whose classes only frame order separates."""
    root = tmp_path_factory.mktemp("mining")
    cache = write_reversal_cache(root / "cache")
    runs = {"step": root / "step", "linear": root / "linear"}
    train_probe(TrainConfig(cache=cache, probe="step", out=runs["step"], epochs=10, lr=1e-2, batch_size=8))
    train_probe(TrainConfig(cache=cache, probe="linear", out=runs["linear"], epochs=3, lr=1e-2, batch_size=8))
    return runs


def test_pairs_from_a_step_run_find_the_reversal_pairs(reversal_runs, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    result = CliRunner().invoke(cli, ["pairs", "--from-run", str(reversal_runs["step"]), "--top", "2", "--out", out])
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["left,right", "up,down"]  # stdout is a --pairs file
    assert "mined on the run's val split" in result.stderr
    mined = read_pairs(out / "pairs.txt", ["up", "down", "left", "right", "static"])
    assert sorted(mined) == [("left", "right"), ("up", "down")]
    record = json.loads((out / "pairs.json").read_text())
    candidates = record["candidates"]
    assert record["split"] == "val" and "on its val split" in record["source"]
    assert candidates[0]["score"] >= 0.9 and all("static" not in (c["a"], c["b"]) for c in candidates[:2])
    assert record["moved"] <= record["changed"] and record["moved"] >= sum(
        c["a_to_b"] + c["b_to_a"] for c in candidates[:2]
    )
    assert (out / "pairs.png").stat().st_size > 0


def test_pairs_are_mined_on_val_unless_told_test(reversal_runs, tmp_path: Path) -> None:
    """Mining on test and then scoring the mined pairs on test would choose on the clips it scores."""
    run = tmp_path / "run"
    shutil.copytree(reversal_runs["step"], run)
    ids = json.loads((run / "splits.json").read_text())
    ids["val"] = ids["val"][:3]  # the val split now differs in size from test: which one is mined shows
    (run / "splits.json").write_text(json.dumps(ids))
    counts = {}
    for split in ("val", "test"):
        args = ["pairs", "--from-run", run, "--out", tmp_path / split] + (["--split", split] if split == "test" else [])
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert f"mined on the run's {split} split" in result.stderr
        counts[split] = json.loads((tmp_path / split / "pairs.json").read_text())["clips"]
    assert counts == {"val": 3, "test": len(ids["test"])}


def test_an_order_blind_run_mines_nothing_and_says_so(reversal_runs, tmp_path: Path) -> None:
    """A linear probe averages the frames: reversed, it answers the same, so no clip moves, however
    many of its answers are wrong (it cannot tell up from down)."""
    out = tmp_path / "pairs"
    result = CliRunner().invoke(cli, ["pairs", "--from-run", str(reversal_runs["linear"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "is order-blind" in result.stderr
    record = json.loads((out / "pairs.json").read_text())
    assert record["changed"] == 0 and record["candidates"] == []


def test_pairs_needs_one_source(tmp_path: Path) -> None:
    assert "one of them" in fails("pairs")
    assert "one of them" in fails("pairs", "--dataset", "demo", "--from-run", tmp_path)
    assert "not a complete stepcli run" in fails("pairs", "--from-run", tmp_path)
