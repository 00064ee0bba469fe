"""Extraction across processes: torchrun ranks split the clips; a lost rank is made up on rerun."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_CLI, TINY_IMAGE_SIZE, TORCHRUN, cache_tokens, child_env

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.distributed import rank_and_world_size


def _args(out: Path, videos: Path) -> list[str]:
    return ["extract", "--dataset", "demo", "--size", "4", "--out", str(out), "--root", str(videos),
            "--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE), "--workers", "0",
            "--batch-size", "1", "--clips-per-shard", "3", "--quiet"]  # fmt: skip


def _assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for clip_id, tokens in expected.items():
        np.testing.assert_array_equal(got[clip_id], tokens)


def test_rank_from_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert rank_and_world_size() == (0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert rank_and_world_size() == (5, 8, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_and_world_size() == (2, 4, 0)  # torchrun's variables win over Slurm's
    assert rank_and_world_size(1, 3) == (1, 3, 0)  # explicit --rank/--world-size win over both


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    videos = tmp_path / "videos"
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(TINY_CLI), *_args(single, videos)], env=child_env(), check=True)
    expected = cache_tokens(single)
    assert len(expected) == 48

    double = tmp_path / "double"
    command = [str(TORCHRUN), "--nproc_per_node=2", "--master_port=0", str(TINY_CLI), *_args(double, videos)]
    subprocess.run(command, env=child_env(), check=True, capture_output=True)
    shards = sorted(p.name for p in (double / "shards").glob("*.h5"))
    assert any(n.startswith("r000-") for n in shards) and any(n.startswith("r001-") for n in shards)
    assert (double / "manifest.json").read_text() == (single / "manifest.json").read_text()
    _assert_same(cache_tokens(double), expected)


@pytest.mark.slow
def test_killed_rank_is_made_up_by_a_single_process_rerun(tmp_path):
    videos = tmp_path / "videos"
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(TINY_CLI), *_args(reference, videos)], env=child_env(), check=True)
    expected = cache_tokens(reference)

    out = tmp_path / "cache"
    ranks = [
        subprocess.Popen(
            [sys.executable, str(TINY_CLI), *_args(out, videos)], env=child_env(RANK=str(r), WORLD_SIZE="2")
        )
        for r in (0, 1)
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "shards").glob("r001-*.h5")):
        time.sleep(0.005)
    ranks[1].send_signal(signal.SIGKILL)
    assert ranks[1].wait() == -signal.SIGKILL
    assert ranks[0].wait() == 0
    partial = FeatureCache(out)
    assert 24 <= len(partial) < 48  # rank 0's half is complete, rank 1's is not

    subprocess.run([sys.executable, str(TINY_CLI), *_args(out, videos)], env=child_env(), check=True)
    assert not list((out / "shards").glob("*.tmp"))
    _assert_same(cache_tokens(out), expected)


@pytest.mark.slow
def test_a_rank_alone_says_the_cache_is_incomplete(tmp_path, monkeypatch):
    """A process that ran alone with a world size of 2 (sbatch without srun) must not look like a full run."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    args = [a for a in _args(tmp_path / "cache", tmp_path / "videos") if a != "--quiet"]
    alone = CliRunner().invoke(cli, [*args, "--rank", "0", "--world-size", "2"])
    assert alone.exit_code == 0, alone.output
    assert "rank 0/2: extracted 24 clips" in alone.output and "the cache holds 24 of 48 clips" in alone.output
    assert "up to 24 clips are the other ranks'" in alone.output
    rest = CliRunner().invoke(cli, args)
    assert rest.exit_code == 0 and "extracted 24 clips, 24 already cached" in rest.output, rest.output
    assert "the cache holds 48 of 48 clips" in rest.output and "other ranks" not in rest.output
