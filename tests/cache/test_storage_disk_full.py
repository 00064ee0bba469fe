"""A full disk (a real file-size limit on a child process) stops extraction with one line, keeps
every complete shard, leaves no partial one, and the rerun completes to the uninterrupted cache.
An --out that cannot be a cache directory is one line too."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE, TINY_CLI, TINY_IMAGE_SIZE, cache_tokens, child_env, error_line, fails, invoke

from stepcli.cache.verify import verify_cache

SHARD_LIMIT = 48 * 1024  # bytes: 2 clips of the tiny backbone's tokens fit in a shard, the 3rd does not


def _args(out: Path, videos: Path, *extra: str) -> list[str]:
    return ["extract", "--dataset", "demo", "--size", "2", "--out", str(out), "--root", str(videos),
            "--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE), "--workers", "0",
            "--batch-size", "1", "--clips-per-shard", "4", "--quiet", *extra]  # fmt: skip


def _run(args: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, str(TINY_CLI), *args], env=child_env(), capture_output=True, text=True, timeout=300,
        preexec_fn=limit if file_size_limit else None,
    )  # fmt: skip


@pytest.mark.slow
def test_file_size_limit_mid_extraction_then_rerun(tmp_path):
    videos = tmp_path / "videos"
    reference = tmp_path / "reference"
    assert invoke(*_args(reference, videos)).exit_code == 0  # in this process: only the limited run needs a child
    expected = cache_tokens(reference)
    assert len(expected) == 24

    out = tmp_path / "cache"
    first = invoke(*_args(out, videos, "--limit", "8"))  # two complete shards, written without a limit
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.h5")}
    assert len(before) == 2

    full = _run(_args(out, videos), file_size_limit=SHARD_LIMIT)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr + full.stdout
    line = error_line(full.stderr)
    assert "file size limit reached" in line and "rerun the same command to resume" in line, line
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == sorted(before), "no partial or temporary shard is left"
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.h5")} == before
    assert verify_cache(out).ok

    rerun = invoke(*_args(out, videos))
    assert rerun.exit_code == 0, rerun.output
    got = cache_tokens(out)
    assert sorted(got) == sorted(expected)
    for clip_id, tokens in expected.items():
        np.testing.assert_array_equal(got[clip_id], tokens)


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_out_that_cannot_be_a_cache_directory(tmp_path, where):
    (tmp_path / "file").write_text("not a directory")
    out = {"file": tmp_path / "file", "under-file": tmp_path / "file" / "cache", "proc": Path("/proc/stepcli")}[where]
    line = fails(*_args(out, tmp_path / "videos")[:-1])
    assert str(out) in line or str(out.parent) in line, line
    assert (tmp_path / "file").read_text() == "not a directory"


def test_out_error_in_a_real_process(tmp_path):
    (tmp_path / "file").write_text("x")
    done = _run(_args(tmp_path / "file", tmp_path / "videos"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is a file, not a folder" in error_line(done.stderr)
