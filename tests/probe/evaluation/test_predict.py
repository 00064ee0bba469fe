"""`stepcli predict` on a video agrees with the same probe on that clip's cached tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, error_line, fails, ok

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.runs.rundir import load_run


@pytest.mark.parametrize("probe", ["step", "logreg"])
def test_predict_matches_cached_tokens(demo_cache, tmp_path, probe):
    run_dir = tmp_path / "run"
    ok("train-probe", "--cache", demo_cache, "--probe", probe, "--out", run_dir, "--epochs", "3", "--quiet")
    cache = FeatureCache(demo_cache)
    run = load_run(run_dir, cache)
    rows = run.rows(cache, "test")[:4]
    cached = predict_logits(run.probe, cache, rows)[0]
    videos = []
    for row in rows:
        clip_id = cache.clip_ids[row]
        videos.append(str(demo_cache.parent / "demo-videos" / clip_id.rsplit("-", 1)[0] / f"{clip_id}.mp4"))
    result = CliRunner().invoke(cli, ["predict", "--run", str(run_dir), "--json", "--top-k", "3", *videos])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["video"] for p in predictions] == videos
    for p, logits in zip(predictions, cached, strict=True):
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert p["top"][0][0] == cache.class_names[int(np.argmax(logits))]
        assert abs(p["top"][0][1] - probs.max()) < 1e-3
        assert len(p["top"]) == 3

    text = CliRunner().invoke(cli, ["predict", "--run", str(run_dir), videos[0]])
    assert text.exit_code == 0 and cache.class_names[int(np.argmax(cached[0]))] in text.output

    assert "file not found" in fails("predict", "--run", run_dir, tmp_path / "nope.mp4")

    # one file that is no video among good ones: the good ones' predictions, then one error line
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    mixed = CliRunner().invoke(cli, ["predict", "--run", str(run_dir), videos[0], str(bad), videos[1]])
    assert mixed.exit_code == 2, mixed.output
    assert mixed.stdout.splitlines()[0] == videos[0] and videos[1] in mixed.stdout.splitlines()
    assert error_line(mixed.stderr).startswith(f"error: {bad}: ") and "1 of 3 videos" in mixed.stderr


def test_predict_scores_the_views_the_cache_holds(tiny_openclip, tmp_path):
    """On a cache of 2 temporal clips x 3 crops, evaluation averages six views per clip; predict on
    the cache's own test videos must give the run's own test predictions, not a one-view guess."""
    cache_dir, videos_dir, run_dir = tmp_path / "cache", tmp_path / "videos", tmp_path / "run"
    ok("extract", "--dataset", "demo", "--size", "4", "--out", cache_dir, "--root", videos_dir, "--backbone",
       TINY_BACKBONE, "--image-size", TINY_IMAGE_SIZE, "--clips", "2", "--crops", "3", "--workers", "0",
       "--quiet")  # fmt: skip
    ok("train-probe", "--cache", cache_dir, "--probe", "step", "--out", run_dir, "--epochs", "2", "--quiet")
    cache = FeatureCache(cache_dir)
    run = load_run(run_dir, cache)
    rows = run.rows(cache, "test")
    assert cache.view_items(rows)[0].size == 6 * len(rows)
    expected = predict_logits(run.probe, cache, rows)[0]
    videos = [str(videos_dir / cache.clip_ids[row].rsplit("-", 1)[0] / f"{cache.clip_ids[row]}.mp4") for row in rows]
    result = CliRunner().invoke(cli, ["predict", "--run", str(run_dir), "--json", "--top-k", "12", *videos])
    assert result.exit_code == 0, result.output
    for prediction, logits in zip(json.loads(result.stdout), expected, strict=True):
        probs = dict(prediction["top"])
        got = np.array([probs[name] for name in cache.class_names])
        np.testing.assert_allclose(got, np.exp(logits), atol=1e-4)
