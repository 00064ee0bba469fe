"""`stepcli evaluate`: a run scored on its own cache, on a cache with its classes in another order,
and refused on a cache from another backbone or with classes it does not know."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY_BACKBONE, TINY_CONFIG, TINY_IMAGE_SIZE, fails, make_demo_cache, ok

from stepcli.cache.format import Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.cache.writer import ShardWriter
from stepcli.probe.runs.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")
TEST_KEYS = ("num_clips", "top1", "top5", "mean_class_accuracy", "loss", "per_class_accuracy", "confusion_matrix",
             "ci95")  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(demo_cache: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "step"
    ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", out, "--epochs", "2", "--quiet")
    return out


def relabelled_cache(source: Path, out: Path, rename: dict[str, str] | None = None, view: str = "") -> Path:
    """The same tokens written again through the cache writer, with the class list reversed, classes
    renamed by `rename` and clip ids prefixed by `view` (as another camera's clips would be)."""
    cache = FeatureCache(source)
    names = cache.class_names[::-1]
    new_label = {old: len(names) - 1 - old for old in range(len(names))}
    with ShardWriter(out, clips_per_shard=1000) as writer:
        for row, clip_id in enumerate(cache.clip_ids):
            frames, stamps = cache.timing(row)
            # one layer of one view: [K=1, T, P+N, D] and [K=1, T]
            writer.add(view + clip_id, new_label[int(cache.labels[row])], cache.splits[row], [cache.tokens([row])],
                       frames[None], stamps[None])  # fmt: skip
    names = [(rename or {}).get(n, n) for n in names]
    dataset = replace(cache.manifest.dataset, class_names=tuple(names), pairs=())
    Manifest(extraction=cache.manifest.extraction, dataset=dataset).save(out)
    return out


def test_evaluate_on_the_runs_cache_reproduces_its_test_metrics(run_dir, demo_cache, tmp_path) -> None:
    ok("evaluate", "--run", run_dir, "--cache", demo_cache, "--out", tmp_path / "e", "--shuffle", "--permutations", "2")
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    reported = load_run(run_dir).metrics
    assert {k: metrics[k] for k in TEST_KEYS} == {k: reported[k] for k in TEST_KEYS}
    record = json.loads((tmp_path / "e/evaluation.json").read_text())
    assert record["clips"] == "the run's recorded test split" and record["num_clips"] == 12
    shuffled = json.loads((tmp_path / "e/shuffle/results.json").read_text())
    assert shuffled["summary"]["original"]["top1"] == reported["top1"]


def test_classes_are_matched_by_name(run_dir, demo_cache, tmp_path) -> None:
    reported = load_run(run_dir).metrics
    for view, clips in (("", "the run's recorded test split"), ("dev1-", "the cache's test split")):
        other = relabelled_cache(demo_cache, tmp_path / f"reversed-classes{view}", view=view)
        assert FeatureCache(other).class_names != FeatureCache(demo_cache).class_names
        ok("evaluate", "--run", run_dir, "--cache", other, "--out", tmp_path / f"e{view}")
        metrics = json.loads((tmp_path / f"e{view}/metrics.json").read_text())
        assert {k: metrics[k] for k in TEST_KEYS} == {k: reported[k] for k in TEST_KEYS}
        assert json.loads((tmp_path / f"e{view}/evaluation.json").read_text())["clips"] == clips
    everything = ok("evaluate", "--run", run_dir, "--cache", other, "--out", tmp_path / "all", "--split", "all")
    assert json.loads((tmp_path / "all/metrics.json").read_text())["num_clips"] == 48 and "top-1" in everything.stdout


def test_unknown_class_is_refused(run_dir, demo_cache, tmp_path) -> None:
    name = FeatureCache(demo_cache).class_names[0]
    other = relabelled_cache(demo_cache, tmp_path / "renamed", rename={name: "juggle"})
    line = fails("evaluate", "--run", run_dir, "--cache", other, "--out", tmp_path / "e")
    assert "'juggle'" in line and not (tmp_path / "e").exists()


def test_another_backbone_is_refused_naming_the_key(run_dir, tmp_path) -> None:
    import open_clip

    config = tmp_path / "stepcli-test-vit-b.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    other = tmp_path / "other"
    make_demo_cache(other, clips_per_class=1, backbone="openclip:stepcli-test-vit-b")
    line = fails("evaluate", "--run", run_dir, "--cache", other, "--out", tmp_path / "e", "--split", "all")
    assert "backbone: 'openclip:stepcli-test-vit' -> 'openclip:stepcli-test-vit-b'" in line
    assert not (tmp_path / "e").exists()


def test_out_that_is_not_an_evaluation_is_refused(run_dir, demo_cache, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert "not an evaluation directory" in fails(
        "evaluate", "--run", run_dir, "--cache", demo_cache, "--out", tmp_path
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def two_layer_run(tiny_openclip, tmp_path_factory) -> tuple[Path, Path]:
    """A STEP run trained on the second of a cache's two layers."""
    root = tmp_path_factory.mktemp("layers")
    cache = root / "cache"
    ok("extract", "--dataset", "demo", "--size", "4", "--out", cache, "--backbone", TINY_BACKBONE, "--image-size",
       TINY_IMAGE_SIZE, "--layers", "-1,-2", "--workers", "0", "--quiet")  # fmt: skip
    ok("train-probe", "--cache", cache, "--probe", "step", "--layer", "-2", "--out", root / "run", "--epochs", "2",
       "--quiet")  # fmt: skip
    return cache, root / "run"


def test_evaluate_reads_the_layer_the_run_was_trained_on(two_layer_run, tmp_path) -> None:
    """Both layers have the same shape, so scoring the cache's first layer would not fail: it would
    print other numbers. The run's own test clips must give its own metrics."""
    cache, run = two_layer_run
    ok("evaluate", "--run", run, "--cache", cache, "--out", tmp_path / "e")
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    reported = json.loads((run / "metrics.json").read_text())
    assert {k: metrics[k] for k in TEST_KEYS} == {k: reported[k] for k in TEST_KEYS}


def test_a_cache_without_the_runs_layer_is_refused(two_layer_run, tmp_path) -> None:
    cache, run = two_layer_run
    other = tmp_path / "one-layer"
    ok("extract", "--dataset", "demo", "--size", "4", "--out", other, "--backbone", TINY_BACKBONE, "--image-size",
       TINY_IMAGE_SIZE, "--workers", "0", "--quiet", "--root", cache / "videos")  # fmt: skip
    line = fails("evaluate", "--run", run, "--cache", other, "--out", tmp_path / "e")
    assert "trained on layer -2" in line and "holds layer(s) -1" in line


def test_clips_the_run_saw_are_never_scored_as_a_test(run_dir, demo_cache, tmp_path) -> None:
    """A smaller cache of the same generator: its test clips are the run's training clips (same ids,
    byte-identical tokens). A copy with other ids but the same groups (source videos): left out by group."""
    small = tmp_path / "small"
    make_demo_cache(small, clips_per_class=2)  # draw 1 is its test clip, and one the run trained on
    line = fails("evaluate", "--run", run_dir, "--cache", small, "--out", tmp_path / "e")
    assert "every one of the 12 clips to score" in line and not (tmp_path / "e").exists()
    cache = FeatureCache(demo_cache)
    copy = tmp_path / "copy"
    with ShardWriter(copy, clips_per_shard=1000) as writer:
        for row, clip_id in enumerate(cache.clip_ids):
            frames, stamps = cache.timing(row)
            writer.add("dev1-" + clip_id, int(cache.labels[row]), cache.splits[row], [cache.tokens([row])],
                       frames[None], stamps[None], group=str(cache.groups[row]))  # fmt: skip
    cache.manifest.save(copy)
    result = ok("evaluate", "--run", run_dir, "--cache", copy, "--out", tmp_path / "all", "--split", "all")
    assert "left out 36 of 48 clips (all clips of the cache)" in result.stderr
    record = json.loads((tmp_path / "all/evaluation.json").read_text())
    assert record["num_clips"] == 12 and record["excluded_seen"] == {"by_clip_id": 0, "by_group": 36}
    assert json.loads((tmp_path / "all/metrics.json").read_text())["top1"] == load_run(run_dir).metrics["top1"]
