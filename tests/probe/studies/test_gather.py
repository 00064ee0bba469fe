"""`stepcli report`: three studies on small caches in one table, and studies on other test clips refused."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import fails, ok

from stepcli.probe.studies.gather import read_study


@pytest.fixture(scope="module")
def studies(demo_cache, tmp_path_factory):
    """Three comparisons on the demo cache's test clips, and a copy of one whose runs saw other test clips."""
    root = tmp_path_factory.mktemp("studies")
    common = ["--epochs", 1, "--permutations", 1]
    ok("compare", "--cache", demo_cache, "--out", root / "a", "--probes", "linear,knn", *common)
    ok("compare", "--cache", demo_cache, "--out", root / "b", "--probes", "linear", "--lr", "0.01", *common)
    ok("compare", "--cache", demo_cache, "--out", root / "c", "--probes", "knn", *common)
    # study d: a's, copied (its comparison.json names its runs relative to it), with a test split one
    # clip short (as a cache extracted with other clips has)
    shutil.copytree(root / "a", root / "d")
    for splits in (root / "d" / "runs").glob("*/splits.json"):
        ids = json.loads(splits.read_text())
        splits.write_text(json.dumps({**ids, "test": ids["test"][1:]}))
    return root


@pytest.mark.slow
def test_report_puts_three_studies_in_one_table(studies) -> None:
    out = studies / "report"
    result = ok("report", studies / "a", studies / "b", studies / "c", "--out", out)
    expected = {}
    for name in "abc":
        rows = json.loads((studies / name / "comparison.json").read_text())["rows"]
        expected |= {(r["probe"], name): r for r in rows}
    table = {row["probe"]: row for row in csv.DictReader((out / "report.csv").open())}
    assert list(table) == ["linear", "knn"]
    for (probe, name), row in expected.items():
        assert float(table[probe][f"{name} top1"]) == pytest.approx(row["top1"])
        assert float(table[probe][f"{name} low"]) == pytest.approx(row["top1_ci"][0])
        cell = f"{100 * row['top1']:.1f}% ({100 * row['top1_ci'][0]:.1f}–{100 * row['top1_ci'][1]:.1f})"
        assert cell in result.stdout
    assert table["knn"]["b top1"] == "" and "–" in result.stdout  # not in study b: a gap
    data = json.loads((out / "report.json").read_text())
    assert data["columns"] == ["a", "b", "c"] and set(data["rows"]) == {"linear", "knn"}
    assert "<table>" in (out / "report.html").read_text()
    by_study = ok("report", studies / "a", studies / "b", studies / "c", "--out", out / "t", "--by", "studies")
    assert by_study.stdout.splitlines()[0].split("|")[1].strip() == "study"


@pytest.mark.slow
def test_report_refuses_studies_on_other_test_clips(studies) -> None:
    assert read_study(studies / "a").test_clips != read_study(studies / "d").test_clips
    line = fails("report", studies / "a", studies / "d", "--out", studies / "refused")
    assert "other clips" in line and str(studies / "d") in line
    assert not (studies / "refused").exists()


def test_report_of_a_directory_that_is_no_comparison(tmp_path) -> None:
    line = fails("report", tmp_path, "--out", tmp_path / "r")
    assert "comparison.json" in line


@pytest.mark.slow
def test_report_reads_an_older_comparison_json_of_absolute_runs_and_times(studies, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(studies / "a", old)
    data = json.loads((old / "comparison.json").read_text())
    for row in data["rows"]:  # as compare wrote it before timing.json
        row |= {"run": str((old / row["run"]).resolve()), "train_time_s": 1.5, "shuffle_time_s": 0.25}
    (old / "comparison.json").write_text(json.dumps(data))
    (old / "timing.json").unlink()
    read, current = read_study(old), read_study(studies / "a")
    assert (read.cells, read.test_clips) == (current.cells, current.test_clips)
