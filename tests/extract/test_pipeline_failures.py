"""Bad clips are recorded and skipped; the good ones are extracted; no traceback."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, fails

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.extract.video import write_video


def _video(path, value: int) -> None:
    write_video(path, np.full((24, 32, 32, 3), value, np.uint8), fps=12)


def test_bad_clips_are_recorded_and_good_ones_extracted(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _video(root / "good1.mp4", 50)
    _video(root / "good2.mp4", 200)
    (root / "empty.mp4").write_bytes(b"")
    _video(root / "truncated.mp4", 100)
    data = (root / "truncated.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "notes.mp4").write_text("this is not a video\n" * 50)
    (root / "classes.txt").write_text("dark\nbright\n")
    (root / "list.csv").write_text(
        "path,label,start,end,split\n"
        "good1.mp4,dark,,,train\n"
        "good2.mp4,bright,,,test\n"
        "missing.mp4,dark,,,train\n"
        "empty.mp4,dark,,,train\n"
        "truncated.mp4,bright,,,train\n"
        "notes.mp4,bright,,,val\n"
        "good2.mp4,purple,0,1,train\n"
    )
    out = tmp_path / "cache"
    args = ["extract", "--dataset", "csv", "--root", str(root), "--annotations", str(root / "list.csv"),
            "--classes", str(root / "classes.txt"), "--out", str(out), "--backbone", TINY_BACKBONE,
            "--image-size", str(TINY_IMAGE_SIZE), "--frames", "4", "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "extracted 2 clips, 0 already cached, 5 failed" in result.output

    cache = FeatureCache(out)
    assert sorted(cache.clip_ids) == ["good1.mp4", "good2.mp4"]
    reasons = {r["clip_id"]: r["reason"] for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert reasons["missing.mp4"] == "file not found"
    assert "empty" in reasons["empty.mp4"]
    assert "truncated.mp4" in reasons and "notes.mp4" in reasons
    assert "not in the class list" in reasons["good2.mp4@0-1"]
    assert len(reasons) == 5

    # inspect reports them; a rerun retries only the failed clips and still says they failed
    listing = CliRunner().invoke(cli, ["inspect", str(out)])
    assert listing.exit_code == 0 and "failures     5" in listing.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "extracted 0 clips, 2 already cached, 5 failed" in again.output
    assert len(FeatureCache(out).failures()) == 5


def test_bad_annotation_file_is_one_line_error(tmp_path):
    (tmp_path / "list.csv").write_text("file,class\na.mp4,x\n")
    line = fails("extract", "--dataset", "csv", "--annotations", tmp_path / "list.csv", "--out", tmp_path / "c")
    assert "lacks column(s) label, path" in line
    assert not (tmp_path / "c").exists()
