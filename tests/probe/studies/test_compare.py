"""`stepcli compare` and `stepcli demo`: tables, plots, resuming, errors."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, check_reproduce, fails, ok

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.probe.models import DEFAULT_PROBES
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.studies.report import COLUMNS

PNGS = ("accuracy_vs_params.png", "order_sensitivity.png")


pytestmark = pytest.mark.usefixtures("one_thread")


def check_png(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0, path


def check_outputs(out: Path, probes: list[str]) -> list[dict]:
    table = (out / "comparison.md").read_text().splitlines()
    header = "| probe | params | top-1 | top-1 95% CI | top-5 | mean per-class | sym. pairs | shuffled | reversed |"
    assert table[0].startswith(header)  # the demo has 12 classes: top-5 is shown
    assert [line.split("|")[1].strip() for line in table[2:]] == probes
    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["probe"] for r in rows] == probes and list(rows[0]) == [
        k for k, _, kind in COLUMNS if kind != "ci" and k != "selected"
    ]
    data = json.loads((out / "comparison.json").read_text())
    assert [r["probe"] for r in data["rows"]] == probes and data["best_probe"] in probes
    for png in (*PNGS, f"confusion_{data['best_probe']}.png"):
        check_png(out / png)
    for name in probes:
        assert (out / "runs" / name / "config.json").is_file()
        check_png(out / "runs" / name / "shuffle" / "shuffle.png")
        result = json.loads((out / "runs" / name / "shuffle" / "results.json").read_text())
        assert result["probe"] == name and result["permutations"] == data["permutations"]
    return data["rows"]


def assert_order_blind(row: dict) -> None:
    """Every frame order gives the same answers."""
    assert row["flip_rate"] == 0 and row["reversed_flip_rate"] == 0, row
    assert row["top1"] == row["shuffled_top1"] == row["reversed_top1"], row
    assert row["pair_top1"] == row["shuffled_pair_top1"] == row["reversed_pair_top1"], row


def test_compare_writes_tables_and_plots_and_resumes(demo_cache: Path, tmp_path: Path, monkeypatch) -> None:
    loads = []
    real_load = FeatureCache.load_into_memory
    monkeypatch.setattr(FeatureCache, "load_into_memory", lambda cache: loads.append(1) or real_load(cache))
    out = tmp_path / "compare"
    probes = ["linear", "step"]
    args = ["compare", "--cache", str(demo_cache), "--out", str(out), "--probes", ",".join(probes),
            "--epochs", "1", "--batch-size", "8", "--permutations", "3", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len(loads) == 1  # the cache is read once for training and shuffle-testing every probe
    assert "| probe | params |" in result.output
    rows = check_outputs(out, probes)
    by_name = {r["probe"]: r for r in rows}
    assert_order_blind(by_name["linear"])
    timing = json.loads((out / "timing.json").read_text())["rows"]  # wall-clock times: beside comparison.json
    assert all(r["num_params"] > 0 and "train_time_s" not in r for r in rows)
    assert all(timing[r["probe"]]["train_time_s"] is not None for r in rows)
    mtime = (out / "runs" / "step" / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(cli, args[:-1])
    assert again.exit_code == 0 and again.output.count("reusing the finished run") == 2, again.output
    assert (out / "runs" / "step" / "model.safetensors").stat().st_mtime_ns == mtime
    retrain = CliRunner().invoke(cli, [*args[:6], "step", "--epochs", "2", "--batch-size", "8", "--permutations", "3"])
    assert retrain.exit_code == 0 and "reusing" not in retrain.output, retrain.output


def test_compare_errors(demo_cache: Path, tmp_path: Path) -> None:
    base = ["compare", "--cache", str(demo_cache), "--out", str(tmp_path / "c")]
    assert "unknown probe 'nope'; valid probes: linear," in fails(*base, "--probes", "linear,nope")
    assert "twice" in fails(*base, "--probes", "linear,linear")
    assert "--permutations" in fails(*base, "--permutations", "0")
    assert "not a stepcli cache" in fails("compare", "--cache", str(tmp_path), "--out", str(tmp_path / "c"))
    bad = tmp_path / "pairs.txt"
    bad.write_text("open,nope\n")
    assert "'nope'" in fails(*base, "--pairs", str(bad))


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--quick", "--quiet", "--backbone", TINY_BACKBONE,
            "--image-size", str(TINY_IMAGE_SIZE), "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| probe | params |" in result.output and "demo finished" in result.output
    assert (out / "cache" / "manifest.json").is_file() and (out / "cache" / "videos").is_dir()
    rows = {r["probe"]: r for r in check_outputs(out / "compare", DEFAULT_PROBES)}
    for name in ("linear", "self-attention", "attentive", "logreg", "knn"):
        assert_order_blind(rows[name])
    again = CliRunner().invoke(cli, args[:4] + args[5:])  # without --quiet: says what it reuses
    assert again.exit_code == 0, again.output
    assert "0 clips, 48 already cached" in again.output and again.output.count("reusing the finished run") == len(
        DEFAULT_PROBES
    )
    # the page's reproduce command reruns this demo (OUT/config.yaml holds --quick's values): all reused
    (command,) = check_reproduce(out / "compare" / "report.html")
    rerun = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert rerun.exit_code == 0, rerun.output
    assert "0 clips, 48 already cached" in rerun.output and rerun.output.count("reusing the finished run") == len(
        DEFAULT_PROBES
    )


def test_compare_over_seeds_shows_mean_and_std(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    args = ["compare", "--cache", str(demo_cache), "--out", str(out), "--probes", "linear,step", "--seeds", "0,1",
            "--epochs", "1", "--batch-size", "8", "--permutations", "2", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "comparison.json").read_text())
    assert data["seeds"] == [0, 1] and set(data["per_seed"]) == {"linear", "step"}
    for row in data["rows"]:
        runs = [out / "runs" / row["probe"] / f"seed-{s}" for s in (0, 1)]
        metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
        tops = [m["top1"] for m in metrics]
        assert [r["top1"] for r in data["per_seed"][row["probe"]]] == tops
        assert row["top1"] == pytest.approx(np.mean(tops), abs=1e-6)
        assert data["std"][row["probe"]]["top1"] == pytest.approx(np.std(tops, ddof=1), abs=1e-6)
        assert all("ci95" in m and "top5" in m for m in metrics)
        timings = [load_run(r).timing for r in runs]
        assert timings[0] == timings[1]  # a probe's seeds trained in one pass, as stacked heads
    table = (out / "comparison.md").read_text()
    assert table.count(" ± ") >= 2 * 8 and "95% CI" not in table  # every number of both probes
    for png in PNGS:
        check_png(out / png)
    assert "each once" in fails(*args[:8], "0,0")


def test_compare_retrains_a_run_of_other_probe_options(demo_cache: Path, tmp_path: Path) -> None:
    """A `--no-temporal-pe` run placed where compare keeps its step run (as the torchrun hint invites)
    must not be reported as "step": it is trained again with the asked settings, and said so."""
    out = tmp_path / "c"
    placed = out / "runs" / "step"
    ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", placed, "--epochs", "1", "--no-temporal-pe",
       "--quiet")  # fmt: skip
    ablated = json.loads((placed / "metrics.json").read_text())["num_params"]
    result = ok(
        "compare", "--cache", demo_cache, "--out", out, "--probes", "step", "--epochs", "1", "--permutations", "1"
    )
    assert "temporal_pe: False -> True" in result.stderr
    config = json.loads((placed / "config.json").read_text())
    assert config["probe_config"]["temporal_pe"] is True
    row = json.loads((out / "comparison.json").read_text())["rows"][0]
    assert row["num_params"] > ablated


def test_compare_reuses_a_run_that_differs_only_at_runtime(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    placed = out / "runs" / "linear"
    ok("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", placed, "--epochs", "1", "--in-memory", "no",
       "--workers", "0", "--device", "cpu", "--quiet")  # fmt: skip
    before = (placed / "model.safetensors").stat().st_mtime_ns
    result = ok("compare", "--cache", demo_cache, "--out", out, "--probes", "linear", "--epochs", "1",
                "--permutations", "1", "-v")  # fmt: skip
    assert "reusing the finished run" in result.stderr
    assert (placed / "model.safetensors").stat().st_mtime_ns == before


def test_compare_in_memory_is_the_users_choice(demo_cache: Path, tmp_path: Path) -> None:
    """`compare --in-memory no` streams every probe's run from HDF5 (a large cache's RSS stays
    bounded); the default, auto, loads a demo-sized cache."""
    for choice, loaded in (("no", False), ("auto", True)):
        out = tmp_path / choice
        ok("compare", "--cache", demo_cache, "--out", out, "--probes", "knn", "--permutations", "1",
           "--in-memory", choice, "--quiet")  # fmt: skip
        runtime = json.loads((out / "runs" / "knn" / "config.json").read_text())["runtime"]
        assert runtime["in_memory"] is loaded, choice
