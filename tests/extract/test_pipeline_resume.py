"""A killed extraction resumes to the same cache; a rerun with another configuration is refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_CLI, TINY_IMAGE_SIZE, TINY_OPENCLIP, cache_tokens, child_env, fails

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli


def _extract_args(out: Path, videos: Path, **changes: str) -> list[str]:
    options = {
        "--dataset": "demo", "--out": str(out), "--root": str(videos), "--size": "6",
        "--backbone": TINY_BACKBONE, "--image-size": str(TINY_IMAGE_SIZE), "--workers": "0",
        "--batch-size": "1", "--clips-per-shard": "4",
    } | changes  # fmt: skip
    return [item for pair in options.items() for item in pair] + ["--quiet"]


def _child(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TINY_CLI), "extract", *args], env=child_env(), stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_identical_cache(tmp_path):
    videos = tmp_path / "videos"
    reference = tmp_path / "reference"
    assert _child(_extract_args(reference, videos)).wait() == 0
    expected = cache_tokens(reference)
    assert len(expected) == 72

    killed = tmp_path / "killed"
    process = _child(_extract_args(killed, videos))
    shards = killed / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(shards.glob("*.h5"))) < 3:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    complete = list(shards.glob("*.h5"))
    assert 3 <= len(complete) < 18, "the kill should land part-way through the 18 shards"
    partial = len(FeatureCache(killed))

    rerun = _child(_extract_args(killed, videos))
    assert rerun.wait() == 0, rerun.stderr.read().decode()
    assert not list(shards.glob("*.tmp")), "stale temporary shards are cleaned up"
    cache = FeatureCache(killed)
    assert sorted(cache.clip_ids) == sorted(expected)
    got = cache_tokens(killed)
    for clip_id, tokens in expected.items():
        np.testing.assert_array_equal(got[clip_id], tokens)
    assert partial < len(cache)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"--image-size": "32"}, "image_size"),
        ({"--frames": "4"}, "num_frames"),
        ({"--layer": "0"}, "layer"),
        ({"--backbone": "timm:vit_small_patch14_dinov2"}, "backbone"),
    ],
)
def test_rerun_with_other_configuration_is_refused(demo_cache, change, named):
    before = sorted(p.stat().st_mtime_ns for p in (demo_cache / "shards").glob("*.h5"))
    manifest = (demo_cache / "manifest.json").read_text()
    args = _extract_args(demo_cache, demo_cache.parent / "demo-videos", **change)
    args[args.index("--size") + 1] = "4"
    line = fails("extract", *args)
    assert named in line and "another configuration" in line
    assert sorted(p.stat().st_mtime_ns for p in (demo_cache / "shards").glob("*.h5")) == before
    assert (demo_cache / "manifest.json").read_text() == manifest


def test_rerun_with_other_weights_is_refused(demo_cache, tmp_path):
    import open_clip
    import torch

    checkpoint = tmp_path / "w.pt"
    torch.save(open_clip.create_model(TINY_OPENCLIP, force_image_size=TINY_IMAGE_SIZE).state_dict(), checkpoint)
    args = _extract_args(
        demo_cache, demo_cache.parent / "demo-videos", **{"--backbone": f"{TINY_BACKBONE}:{checkpoint}"}
    )
    args[args.index("--size") + 1] = "4"
    assert "weights: 'random-init' -> 'sha256:" in fails("extract", *args)


def test_complete_rerun_does_nothing(demo_cache):
    args = _extract_args(demo_cache, demo_cache.parent / "demo-videos")
    args[args.index("--size") + 1] = "4"
    args.remove("--quiet")
    result = CliRunner().invoke(cli, ["extract", *args])
    assert result.exit_code == 0, result.output
    assert "extracted 0 clips, 48 already cached, 0 failed" in result.output
