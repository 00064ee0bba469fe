"""`train-probe --sweep`: heads trained in one pass, selected on val, read once per batch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLI, TORCHRUN, child_env, fails, ok

from stepcli.cache.reader import FeatureCache
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.training.sweep import SweepRecord

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--epochs", "2", "--batch-size", "8", "--quiet"]


def train(cache: Path, out: Path, *extra: str, probe: str = "step") -> None:
    ok("train-probe", "--cache", cache, "--probe", probe, "--out", out, *FAST, *extra)


def test_one_head_sweep_gives_the_plain_runs_metrics(demo_cache: Path, tmp_path: Path) -> None:
    """A sweep's head is trained exactly as a plain run with its settings: same bytes in metrics.json."""
    train(demo_cache, tmp_path / "plain", "--lr", "0.003", "--weight-decay", "0.01", "--cls", "frame")
    train(demo_cache, tmp_path / "sweep", "--sweep", "lr=0.003", "--sweep", "weight_decay=0.01", "--sweep", "cls=frame")
    assert (tmp_path / "plain/metrics.json").read_bytes() == (tmp_path / "sweep/metrics.json").read_bytes()
    assert (
        (tmp_path / "plain/log.jsonl").read_text().count("\n")
        == 2
        == (tmp_path / "sweep/log.jsonl").read_text().count("\n")
    )
    plain, swept = load_run(tmp_path / "plain").config, load_run(tmp_path / "sweep").config
    assert plain.train.lr == swept.train.lr == 0.003 and swept.probe_options == plain.probe_options


def test_sweep_selects_on_val_and_keeps_every_head(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(demo_cache, out, "--sweep", "lr=3e-4,1e-3,3e-3", "--sweep", "weight_decay=0.01,0.05")
    record = SweepRecord.load(out)
    assert [h.values for h in record.heads] == [
        {"lr": lr, "weight_decay": wd} for lr in (3e-4, 1e-3, 3e-3) for wd in (0.01, 0.05)
    ]
    keys = [(h.val["top1"], -h.val["loss"]) for h in record.heads]
    assert keys[record.selected] == max(keys)
    assert all(h.test["num_clips"] == 12 and "ci95" in h.test and len(h.log) == 2 for h in record.heads)
    assert SweepRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    run = load_run(out, FeatureCache(demo_cache))
    chosen = record.heads[record.selected]
    assert (run.config.train.lr, run.config.train.weight_decay) == (chosen.values["lr"], chosen.values["weight_decay"])
    assert run.metrics["top1"] == chosen.test["top1"] and run.metrics["val"]["top1"] == chosen.val["top1"]
    assert run.metrics["best_epoch"] == chosen.best_epoch
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == chosen.log  # the run directory is the selected head's ordinary run
    shuffled = ok("shuffle-test", "--run", out, "--permutations", "2", "--quiet")
    assert "reversed" in shuffled.output


def test_sweep_reads_each_training_batch_once(demo_cache: Path, tmp_path: Path, monkeypatch) -> None:
    """Streaming from HDF5: K heads read the train split as often as one head does."""
    cache = FeatureCache(demo_cache)
    train_rows = set(np.flatnonzero(cache.splits == "train").tolist())
    reads: list[int] = []
    real_tokens = FeatureCache.tokens

    def counting(self, rows, views=None):
        if set(np.asarray(rows).tolist()) <= train_rows:
            reads.append(len(rows))
        return real_tokens(self, rows, views)

    monkeypatch.setattr(FeatureCache, "tokens", counting)
    counts = {}
    for heads, sweep in ((1, []), (6, ["--sweep", "lr=3e-4,1e-3,3e-3", "--sweep", "weight_decay=0.01,0.05"])):
        reads.clear()
        train(demo_cache, tmp_path / str(heads), "--in-memory", "no", *sweep)
        counts[heads] = list(reads)
    batches_per_epoch = -(-len(train_rows) // 8)
    leakage_batches = -(-len(train_rows) // 64)  # the leakage check reads train's view 0 once per run
    # training reads: 2 epochs x batches, after the one leakage pass; no evaluation reads train rows
    assert counts[6] == counts[1] and len(counts[1]) == leakage_batches + 2 * batches_per_epoch
    assert sum(counts[6]) == 3 * len(train_rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "batch_size=8,16"], "only these can be swept"),
        (["--sweep", "lr="], "lists no values"),
        (["--sweep", "lr=1e-3,1e-3"], "lists a value twice"),
        (["--sweep", "lr=1e-3", "--sweep", "lr=3e-3"], "given twice"),
        (["--sweep", "lr0.1"], "not KEY=V1,V2"),
        (["--sweep", "lr=0,1e-3"], "'--sweep lr': 0.0 is not in the range 0<x<=10"),
        (["--cls", "frame", "--sweep", "cls=global,frame"], "both swept and fixed"),
        (["--sweep", "block=simplified,mlp"], "block"),
    ],
)
def test_bad_sweeps_are_one_line_errors(demo_cache: Path, tmp_path: Path, args: list[str], message: str) -> None:
    line = fails("train-probe", "--cache", demo_cache, "--probe", "step", "--out", tmp_path / "r", *args)
    assert message in line


def test_closed_form_probe_cannot_be_swept(demo_cache: Path, tmp_path: Path) -> None:
    line = fails(
        "train-probe", "--cache", demo_cache, "--probe", "logreg", "--out", tmp_path / "r", "--sweep", "lr=1,2"
    )
    assert "gradient-trained" in line and not (tmp_path / "r").exists()


def test_train_probe_over_seeds(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    result = ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", out, *FAST, "--seeds", "0,1")
    summary = json.loads((out / "seeds.json").read_text())
    tops = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["top1"] for s in (0, 1)]
    assert summary["seeds"] == [0, 1] and summary["per_seed"]["top1"] == tops
    assert summary["mean"]["top1"] == pytest.approx(np.mean(tops), abs=1e-6)
    assert summary["std"]["top1"] == pytest.approx(np.std(tops, ddof=1), abs=1e-6)
    assert "mean ± sample std (n-1)" in result.stdout
    # a seed's run is the plain run of that seed, up to float rounding (the seeds trained as stacked heads)
    train(demo_cache, tmp_path / "plain", "--seed", "1")
    mine, plain = (json.loads((d / "metrics.json").read_text()) for d in (out / "seed-1", tmp_path / "plain"))
    assert (mine["top1"], mine["best_epoch"], mine["val"]["top1"]) == (
        plain["top1"],
        plain["best_epoch"],
        plain["val"]["top1"],
    )
    assert mine["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    assert "each once" in fails("train-probe", "--cache", demo_cache, "--probe", "step", "--out", out, "--seeds", "1,1")


@pytest.mark.slow
def test_sweep_under_torchrun_matches_one_process(demo_cache: Path, tmp_path: Path) -> None:
    """Two gloo processes train every head with DDP and select the same head with the same numbers."""
    args = ["--probe", "step", "--epochs", "2", "--batch-size", "23", "--device", "cpu", "--sweep", "lr=1e-3,3e-3"]
    ok("train-probe", "--cache", demo_cache, "--out", tmp_path / "one", *args, "--quiet")
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(TINY_CLI), "train-probe",
               "--cache", str(demo_cache), "--out", str(tmp_path / "two"), *args]  # fmt: skip
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    one, two = SweepRecord.load(tmp_path / "one"), SweepRecord.load(tmp_path / "two")
    assert one.selected == two.selected
    for a, b in zip(one.heads, two.heads, strict=True):
        assert a.val["top1"] == b.val["top1"] and a.val["loss"] == pytest.approx(b.val["loss"], abs=1e-4)
