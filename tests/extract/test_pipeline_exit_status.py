"""The exit status of `extract` says whether any clip of the requested set is missing from the
cache when the run ends, on the first run and on every rerun."""

from __future__ import annotations

import numpy as np
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, invoke

from stepcli.extract.video import write_video


def test_exit_status_follows_what_the_cache_lacks(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "a.mp4", np.full((12, 32, 32, 3), 60, np.uint8), fps=12)
    (root / "list.csv").write_text("path,label\na.mp4,dark\nlater.mp4,bright\n")
    out = tmp_path / "cache"
    args = ["extract", "--dataset", "csv", "--root", root, "--annotations", root / "list.csv", "--out", out,
            "--backbone", TINY_BACKBONE, "--image-size", TINY_IMAGE_SIZE, "--frames", "2", "--workers", "0"]  # fmt: skip

    assert invoke(*args, "--limit", "1").exit_code == 0  # the requested set is a.mp4 alone
    first = invoke(*args)
    assert first.exit_code == 1 and "1 failed" in first.stderr  # later.mp4 is not there yet
    assert invoke(*args).exit_code == 1  # still missing on a rerun
    write_video(root / "later.mp4", np.full((12, 32, 32, 3), 200, np.uint8), fps=12)
    done = invoke(*args)
    assert done.exit_code == 0 and "the cache holds 2 of 2 clips" in done.stderr
    assert invoke(*args).exit_code == 0  # nothing left to do is success
