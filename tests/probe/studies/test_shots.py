"""`compare --shots --folds`: low-data curves with the folds' spread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import check_reproduce, fails, ok
from test_compare import check_png

from stepcli.probe.evaluation.metrics import mean_std
from stepcli.probe.runs.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shots_curve_with_fold_spread(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "shots"
    ok("compare", "--cache", demo_cache, "--out", out, "--probes", "linear,step", "--shots", "2,1", "--folds", "2",
       "--epochs", "1", "--quiet")  # fmt: skip
    data = json.loads((out / "shots.json").read_text())
    assert data["shots"] == [1, 2] and data["folds"] == 2
    points = {(p["probe"], p["shots"]): p for p in data["points"]}
    assert set(points) == {(p, k) for p in ("linear", "step") for k in (1, 2)}
    for (probe, k), point in points.items():
        runs = [load_run(out / f"shots-{k}" / f"fold-{f}" / "runs" / probe) for f in range(2)]
        assert [r.metrics["train_clips"] for r in runs] == [12 * k] * 2  # K clips of each of the 12 classes
        assert [r.metrics["top1"] for r in runs] == point["per_fold_top1"]
        assert (point["top1"], point["top1_std"]) == mean_std(point["per_fold_top1"])
        assert all(r.metrics["num_clips"] == 12 for r in runs)  # the full test split
    draws = [json.loads((out / "shots-1" / f"fold-{f}" / "runs" / "step" / "splits.json").read_text()) for f in (0, 1)]
    assert draws[0]["train"] != draws[1]["train"]  # each fold a different draw
    assert "± " in (out / "shots.md").read_text()
    check_png(out / "shots.png")
    page = (out / "report.html").read_text()  # the study's page: its table and curve
    assert all(f">{p['probe']}<" in page for p in data["points"]) and page.count("data:image/png") == 1
    assert all(f">{cell}<" in page for line in (out / "shots.md").read_text().splitlines()[4:] for cell in
               [c.strip() for c in line.strip("|").split("|")])  # fmt: skip
    assert check_reproduce(out / "shots-1" / "fold-0" / "report.html")[-1] == (
        f"stepcli compare --config {out.resolve() / 'config.yaml'}"  # a cell's page: the whole study's command
    )
    assert "--shots" in fails("compare", "--cache", demo_cache, "--out", out, "--shots", "0,1")
