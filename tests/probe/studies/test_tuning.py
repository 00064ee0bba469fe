"""`compare --sweep`: every gradient-trained probe tuned over one grid, selected on val only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import fails, ok

from stepcli.probe.training.sweep import SweepRecord

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP = ["--sweep", "lr=3e-4,3e-3", "--sweep", "weight_decay=0.01,0.1"]


def corrupt_test_labels(cache: Path, out: Path) -> Path:
    """A copy of `cache` whose test clips all carry the next class's label."""
    shutil.copytree(cache, out)
    for shard in (out / "shards").glob("*.h5"):
        with h5py.File(shard, "r+") as f:
            test = np.array([(s.decode() if isinstance(s, bytes) else s) == "test" for s in f["split"][:]])
            labels = f["label"][:]
            labels[test] = (labels[test] + 1) % 12
            f["label"][...] = labels
    return out


def compare(cache: Path, out: Path, *extra: str) -> dict:
    ok("compare", "--cache", cache, "--out", out, "--probes", "linear,step,logreg", "--epochs", "2",
       "--permutations", "2", "--quiet", *SWEEP, *extra)  # fmt: skip
    return json.loads((out / "comparison.json").read_text())


def test_tuned_selection_never_reads_test_labels(demo_cache: Path, tmp_path: Path) -> None:
    clean = compare(demo_cache, tmp_path / "clean")
    corrupt = compare(corrupt_test_labels(demo_cache, tmp_path / "corrupt"), tmp_path / "corrupted")
    assert clean["sweep"] == {"lr": [3e-4, 3e-3], "weight_decay": [0.01, 0.1]}
    for name in ("linear", "step"):
        a, b = (SweepRecord.load(Path(run) / "runs" / name) for run in (tmp_path / "clean", tmp_path / "corrupted"))
        assert len(a.heads) == 4 and a.selected == b.selected
        assert [(h.best_epoch, h.val) for h in a.heads] == [(h.best_epoch, h.val) for h in b.heads]
        assert [h.test for h in a.heads] != [h.test for h in b.heads]  # the corruption reached the test numbers
    rows = {r["probe"]: r for r in clean["rows"]}
    assert [r["selected"] for r in clean["rows"]] == [r["selected"] for r in corrupt["rows"]]
    assert rows["linear"]["selected"].startswith("lr=") and rows["logreg"]["selected"] is None  # fitted: untuned
    assert "selected on val" in (tmp_path / "clean" / "comparison.md").read_text()
    # the same grid again reuses every run; another grid trains them again
    again = ok("compare", "--cache", demo_cache, "--out", tmp_path / "clean", "--probes", "linear,step,logreg",
               "--epochs", "2", "--permutations", "2", *SWEEP).output  # fmt: skip
    assert again.count("reusing the finished run") == 3, again
    other = ok("compare", "--cache", demo_cache, "--out", tmp_path / "clean", "--probes", "step", "--epochs", "2",
               "--permutations", "2", "--sweep", "lr=3e-4").output  # fmt: skip
    assert "reusing" not in other and "sweep:" in other


def test_sweep_errors(demo_cache: Path, tmp_path: Path) -> None:
    base = ["compare", "--cache", str(demo_cache), "--out", str(tmp_path / "c")]
    assert "only these can be swept" in fails(*base, "--probes", "linear,step", "--sweep", "cls=frame,mean")
    assert "--sweep lr" in fails(*base, "--sweep", "lr=0")
