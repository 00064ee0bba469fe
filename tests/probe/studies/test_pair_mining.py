"""`stepcli pairs --from-run`: candidate nearly-symmetric pairs from where STEP sends reversed clips."""

from __future__ import annotations

import json
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


def test_pairs_from_a_step_run_find_the_reversal_pairs(tmp_path: Path) -> None:
    cache = write_reversal_cache(tmp_path / "cache")
    train_probe(TrainConfig(cache=cache, probe="step", out=tmp_path / "step", epochs=10, lr=1e-2, batch_size=8))
    result = CliRunner().invoke(cli, ["pairs", "--from-run", str(tmp_path / "step"), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["left,right", "up,down"]  # stdout is a --pairs file
    out = tmp_path / "step" / "pairs"
    mined = read_pairs(out / "pairs.txt", ["up", "down", "left", "right", "static"])
    assert sorted(mined) == [("left", "right"), ("up", "down")]
    candidates = json.loads((out / "pairs.json").read_text())["candidates"]
    assert candidates[0]["score"] >= 0.9 and all("static" not in (c["a"], c["b"]) for c in candidates[:2])
    assert (out / "pairs.png").stat().st_size > 0


def test_pairs_needs_one_source(tmp_path: Path) -> None:
    assert "one of them" in fails("pairs")
    assert "one of them" in fails("pairs", "--dataset", "demo", "--from-run", tmp_path)
    assert "not a complete stepcli run" in fails("pairs", "--from-run", tmp_path)
