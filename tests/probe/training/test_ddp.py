"""`train-probe` under torchrun: two CPU processes with DistributedDataParallel (gloo) train the
same probe as one process, and only rank 0 writes the run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_CLI, TORCHRUN, child_env, fails

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.probe.data import SHUFFLE_GROUP_BYTES, epoch_batches, shard_batch
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import classification_metrics
from stepcli.probe.runs.rundir import load_run

# 24 train clips in batches of 23: each epoch's first step splits 12/11 across the two ranks and
# its last step holds one clip, so rank 1 runs a zero-weight padding step
ARGS = ["--probe", "step", "--epochs", "3", "--batch-size", "23", "--lr", "3e-3", "--device", "cpu"]
RUN_FILES = {
    "config.json",
    "config.yaml",
    "model.safetensors",
    "metrics.json",
    "timing.json",
    "splits.json",
    "log.jsonl",
    "log.csv",
}


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 5, 8, 23])
@pytest.mark.parametrize("view_bytes", [1024, SHUFFLE_GROUP_BYTES // 4])  # one shuffle; shuffled in groups
def test_each_clip_goes_to_exactly_one_rank_per_epoch(world_size: int, batch_size: int, view_bytes: int) -> None:
    train = np.arange(100, 124)
    for epoch in (1, 2):
        batches = epoch_batches(train, batch_size, seed=0, epoch=epoch, view_bytes=view_bytes)
        assert len(batches) == -(-len(train) // batch_size)  # the single-process steps, on every rank
        taken: list[int] = []
        for batch in batches:
            for rank in range(world_size):
                rows, weights = shard_batch(batch, rank, world_size)
                assert len(rows) == len(weights) >= 1  # every rank steps, or DDP would hang
                assert set(rows) <= set(batch)
                taken += rows[weights == 1].tolist()
                assert weights.sum() == len(rows) or (len(batch) <= rank and weights.tolist() == [0])
        assert sorted(taken) == train.tolist()


@pytest.mark.slow
def test_two_processes_train_like_one(demo_cache: Path, tmp_path: Path) -> None:
    single, double = tmp_path / "single", tmp_path / "double"
    result = CliRunner().invoke(
        cli, ["train-probe", "--cache", str(demo_cache), "--out", str(single), *ARGS, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(TINY_CLI), "train-probe",
               "--cache", str(demo_cache), "--out", str(double), *ARGS]  # fmt: skip
    # --standalone: torchrun picks a free port and hands it on (--master_port=0 would reach the ranks as 0)
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("train-probe: step on") == 1 and done.stderr.count("test top-1") == 1  # rank 0 only

    assert {p.name for p in double.iterdir()} == RUN_FILES
    assert json.loads((double / "config.json").read_text())["runtime"]["world_size"] == 2
    logs = {
        run: [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in (single, double)
    }
    assert [r["epoch"] for r in logs[double]] == [1, 2, 3]  # one writer
    for one, two in zip(logs[single], logs[double], strict=True):  # the same steps and gradients
        for key in ("lr", "train_loss", "train_top1", "val_loss", "val_top1"):
            assert two[key] == pytest.approx(one[key], abs=1e-4), key

    cache = FeatureCache(demo_cache)
    run = load_run(double, cache)
    rows = run.rows(cache, "test")
    again = classification_metrics(predict_logits(run.probe, cache, rows)[0], cache.labels[rows], cache.class_names)
    assert again["top1"] == run.metrics["top1"] and again["confusion_matrix"] == run.metrics["confusion_matrix"]
    one_top1 = load_run(single).metrics["top1"]
    assert abs(run.metrics["top1"] - one_top1) <= 1 / 12 + 1e-9  # within one of the 12 test clips

    shuffled = CliRunner().invoke(cli, ["shuffle-test", "--run", str(double), "--permutations", "2", "--device", "cpu"])
    assert shuffled.exit_code == 0, shuffled.output


def test_logreg_across_processes_is_a_one_line_error(demo_cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = fails("train-probe", "--cache", str(demo_cache), "--probe", "logreg", "--out", str(tmp_path / "r"))
    assert "run it without torchrun" in line and not (tmp_path / "r").exists()


def test_slurm_tasks_without_master_address_are_a_one_line_error(demo_cache, tmp_path, monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    line = fails("train-probe", "--cache", str(demo_cache), "--probe", "linear", "--out", str(tmp_path / "r"))
    assert "MASTER_ADDR or MASTER_PORT" in line and not (tmp_path / "r").exists()


def test_compare_across_processes_is_a_one_line_error(demo_cache, tmp_path, monkeypatch) -> None:
    """Every process would write the same tables; compare reuses runs trained under torchrun instead."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = fails("compare", "--cache", str(demo_cache), "--out", str(tmp_path / "c"))
    assert "compare runs in one process" in line and not (tmp_path / "c").exists()
