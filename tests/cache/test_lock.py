"""One writer per (cache, rank): a second extraction into the same cache stops at once with one
line naming the first; a SIGKILLed holder never blocks the rerun; the demo folder is shared safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE, TINY_CLI, TINY_IMAGE_SIZE, cache_tokens, child_env, error_line

from stepcli.cache.lock import CacheLock, is_held, lock_path
from stepcli.cache.verify import verify_cache
from stepcli.errors import StepcliError


def _args(out: Path, videos: Path, size: int = 6) -> list[str]:
    return ["extract", "--dataset", "demo", "--size", str(size), "--out", str(out), "--root", str(videos),
            "--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE), "--workers", "0",
            "--batch-size", "1", "--clips-per-shard", "4", "--quiet"]  # fmt: skip


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TINY_CLI), *args], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_second_lock_on_a_rank_is_refused_naming_the_holder(tmp_path):
    with CacheLock.acquire(tmp_path, rank=0, world_size=1):
        assert is_held(tmp_path, 0)
        with pytest.raises(StepcliError, match=f"being written by process {os.getpid()} on "):
            CacheLock.acquire(tmp_path, rank=0, world_size=1)
    assert not is_held(tmp_path, 0)
    CacheLock.acquire(tmp_path, rank=0, world_size=1).release()  # released: taken again at once


def test_ranks_lock_side_by_side_but_not_across_world_sizes(tmp_path):
    with CacheLock.acquire(tmp_path, rank=0, world_size=2), CacheLock.acquire(tmp_path, rank=1, world_size=2):
        assert is_held(tmp_path, 0) and is_held(tmp_path, 1)
    with CacheLock.acquire(tmp_path, rank=1, world_size=2):
        # a one-process run would redo rank 1's clips while rank 1 writes them
        with pytest.raises(StepcliError, match="with 2 processes, this one has 1"):
            CacheLock.acquire(tmp_path, rank=0, world_size=1)
        assert not is_held(tmp_path, 0), "a refused process keeps no lock"


@pytest.mark.slow
def test_two_extractions_at_once_then_sigkill_the_holder(tmp_path):
    """Two extractions start at once into one cache, generating one demo folder: the demo is made
    once, exactly one extracts, the other stops with one line naming it. The holder is SIGKILLed
    (its main process only: its decoding workers hold a copy of every descriptor) and the rerun
    proceeds at once to the cache an uninterrupted run makes."""
    videos = tmp_path / "videos"
    shared = tmp_path / "shared"
    args = [*_args(shared, videos, size=4), "--workers", "2"]
    first, second = _start(args), _start(args)
    deadline = time.monotonic() + 300
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    refused, holder = (first, second) if first.poll() is not None else (second, first)
    stdout, stderr = refused.communicate()
    assert refused.returncode == 2, stderr
    assert "Traceback" not in stdout + stderr
    line = error_line(stderr)
    assert f"is being written by process {holder.pid} " in line, line

    while holder.poll() is None and len(list((shared / "shards").glob("*.h5"))) < 3:
        time.sleep(0.005)
    assert holder.poll() is None, "the holder should still be extracting"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not is_held(shared, 0), "the lock died with the holder, not with its workers"
    rerun = _start(args)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert verify_cache(shared).ok
    assert not list((shared / "shards").glob("*.tmp"))

    reference = tmp_path / "reference"
    assert _start(_args(reference, videos, size=4)).wait() == 0
    expected, got = cache_tokens(reference), cache_tokens(shared)
    assert sorted(got) == sorted(expected) and len(got) == 48
    for clip_id, tokens in expected.items():
        np.testing.assert_array_equal(got[clip_id], tokens)


def test_lock_file_is_in_the_cache(tmp_path):
    with CacheLock.acquire(tmp_path, rank=3, world_size=4):
        assert lock_path(tmp_path, 3).is_file()
        assert '"rank": 3' in lock_path(tmp_path, 3).read_text()
