"""Worker processes never hang a run: real processes under a real file-size limit (which makes a
decoding worker's shared-memory transfer fail, as a full or small /dev/shm does) and real SIGKILLs.
Each run ends within a minute with one line and no traceback, keeps every complete shard byte for
byte, releases its lock, and the same command then completes to the uninterrupted cache."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE, TINY_CLI, TINY_IMAGE_SIZE, cache_tokens, child_env, error_line, invoke
from torch.utils.data import Dataset

from stepcli.cache.lock import is_held
from stepcli.cache.verify import verify_cache
from stepcli.errors import StepcliError
from stepcli.workers import Watch, watched_items

# one clip's decoded frames are 8 x 3 x 64 x 64 float32 = 384 KiB of shared memory
SHM_AND_SHARD_LIMIT = 48 * 1024  # neither the frames nor a third clip of a shard fit
SHM_LIMIT = 256 * 1024  # the frames do not fit, a shard of 4 clips (~165 KiB) does
SHM_WARNING = "decoding workers cannot put their results in shared memory"
MINUTE = 60


def _args(out: Path, videos: Path, *extra: str, size: int = 2, workers: int = 2) -> list[str]:
    return ["extract", "--dataset", "demo", "--size", str(size), "--out", str(out), "--root", str(videos),
            "--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE), "--workers", str(workers),
            "--batch-size", "1", "--clips-per-shard", "4", "--quiet", *extra]  # fmt: skip


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run(args: list[str], limit: int) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(TINY_CLI), *args], env=child_env(), capture_output=True, text=True,
                          timeout=MINUTE, preexec_fn=_limited(limit))  # fmt: skip
    return done, time.monotonic() - start


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TINY_CLI), *args], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _children(pid: int) -> list[int]:
    """The processes `pid` started (its DataLoader workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            pass
    return children


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.h5"))}


def _reference(tmp_path: Path, videos: Path, size: int) -> dict:
    reference = tmp_path / "reference"
    assert invoke(*_args(reference, videos, size=size, workers=0)).exit_code == 0
    return cache_tokens(reference)


def _assert_same_cache(out: Path, expected: dict) -> None:
    got = cache_tokens(out)
    assert sorted(got) == sorted(expected)
    for clip_id, tokens in expected.items():
        np.testing.assert_array_equal(got[clip_id], tokens)


def _assert_one_line(done: subprocess.CompletedProcess | subprocess.Popen, stdout: str, stderr: str) -> str:
    assert done.returncode == 2, stderr
    assert "Traceback" not in stdout + stderr, stderr
    return error_line(stderr)


@pytest.mark.slow
def test_shared_memory_and_disk_both_too_small_then_rerun(tmp_path):
    """The frames go through the pipe (one warning); the shard that does not fit stops the run."""
    videos = tmp_path / "videos"
    expected = _reference(tmp_path, videos, size=2)
    out = tmp_path / "cache"
    assert invoke(*_args(out, videos, "--limit", "8")).exit_code == 0  # two complete shards
    before = _shards(out)
    assert len(before) == 2

    done, seconds = _run(_args(out, videos), limit=SHM_AND_SHARD_LIMIT)
    line = _assert_one_line(done, done.stdout, done.stderr)
    assert seconds < MINUTE
    assert "file size limit reached" in line and "rerun the same command to resume" in line, line
    assert SHM_WARNING in done.stderr and "--workers 0 or a larger /dev/shm" in done.stderr
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(before), "no partial shard is left"
    assert _shards(out) == before
    assert verify_cache(out).ok and not is_held(out, 0)

    assert invoke(*_args(out, videos)).exit_code == 0
    _assert_same_cache(out, expected)


@pytest.mark.slow
def test_shared_memory_too_small_passes_frames_through_the_pipe(tmp_path):
    """Before: each worker printed a traceback and the run waited forever. Now: a warning and the
    cache an unlimited run makes."""
    videos = tmp_path / "videos"
    expected = _reference(tmp_path, videos, size=2)
    out = tmp_path / "cache"
    done, seconds = _run(_args(out, videos), limit=SHM_LIMIT)
    assert done.returncode == 0, done.stderr
    assert seconds < MINUTE
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if SHM_WARNING in line], done.stderr
    _assert_same_cache(out, expected)


@pytest.mark.slow
def test_decoding_worker_killed_mid_run_then_rerun(tmp_path):
    videos = tmp_path / "videos"
    expected = _reference(tmp_path, videos, size=4)
    out = tmp_path / "cache"
    run = _start(_args(out, videos, size=4))
    deadline = time.monotonic() + MINUTE
    while run.poll() is None and len(_shards(out) if (out / "shards").is_dir() else {}) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    before = _shards(out)
    workers = _children(run.pid)
    assert run.poll() is None and len(workers) == 2, "the run should still be extracting with its 2 workers"
    os.kill(workers[0], signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = run.communicate(timeout=MINUTE)
    assert time.monotonic() - killed < MINUTE
    line = _assert_one_line(run, stdout, stderr)
    assert "decoding worker" in line and f"(pid {workers[0]}) was killed by SIGKILL" in line, line
    assert "rerun the same command to resume" in line, line
    after = _shards(out)
    assert {name: after[name] for name in before} == before, "complete shards are kept byte for byte"
    assert verify_cache(out).ok and not is_held(out, 0)
    assert not list((out / "shards").glob("*.tmp"))

    assert invoke(*_args(out, videos, size=4)).exit_code == 0
    _assert_same_cache(out, expected)


@pytest.mark.slow
def test_reader_worker_killed_during_training_then_rerun(demo_cache, tmp_path):
    out = tmp_path / "run"
    args = ["train-probe", "--cache", str(demo_cache), "--probe", "linear", "--out", str(out), "--in-memory", "no",
            "--workers", "2", "--epochs", "8", "--batch-size", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    run = _start(args)
    deadline = time.monotonic() + MINUTE
    while run.poll() is None and len(_children(run.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    workers = _children(run.pid)  # at once: each epoch's loader has its own workers, which end with it
    assert run.poll() is None and workers
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=MINUTE)
    line = _assert_one_line(run, stdout, stderr)
    assert "HDF5 reader worker" in line and f"(pid {workers[0]}) was killed by SIGKILL" in line, line

    rerun = subprocess.run([sys.executable, str(TINY_CLI), *args], env=child_env(), capture_output=True, text=True,
                           timeout=5 * MINUTE)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "metrics.json").is_file()


class _Slow(Dataset):
    """Item 1 takes `seconds`; item 2 cannot be pickled (a lock), so its worker cannot pass it back."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        if i == 1:
            time.sleep(self.seconds)
        return {"i": i, "x": np.full(4, i), "lock": threading.Lock() if i == 2 else None}


def test_a_result_the_worker_cannot_send_is_one_line_not_a_hang():
    """Before: the worker's queue thread printed a traceback and the main process waited forever."""
    got = []
    start = time.monotonic()
    with pytest.raises(StepcliError, match=r"test worker \d could not pass item 2 back to the main process") as err:
        for item in watched_items(_Slow(), 2, Watch("test worker")):
            got.append(item["i"])
    assert got == [0, 1] and time.monotonic() - start < 20
    assert "\n" not in str(err.value)


def test_a_stall_says_what_each_worker_does_and_stops_nothing(caplog):
    watch = Watch("test worker", describe=lambda i: f"item {i}", stall_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="stepcli"):
        items = watched_items(_Slow(seconds=2.0), 1, watch)
        got = [next(items)["i"] for _ in range(2)]
        items.close()
    assert got == [0, 1], "the slow item still arrives"
    stalls = [r.getMessage() for r in caplog.records if "stall" in r.getMessage()]
    assert stalls and "test worker 0 (pid " in stalls[0] and "on item 1 for" in stalls[0], stalls
