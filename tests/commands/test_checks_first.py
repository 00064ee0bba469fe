"""What a new user found (issue 27), one test each: options that cannot work on the given cache
or run are refused before any training, options that do nothing are refused, nothing is silently
wrong, and the messages send the user the right way."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import fails, invoke, ok, write_synthetic_cache

from stepcli.cache.format import Manifest
from stepcli.errors import StepcliError
from stepcli.extract.pipeline import ExtractSummary, check_or_write_manifest
from stepcli.probe.config import TrainConfig
from stepcli.probe.studies.compare import CompareConfig, runnable_rows

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["open", "close", "push"]


def _cache(path: Path, patches: int = 2) -> Path:
    labels, splits = [], []
    for label in range(3):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            labels += [label] * n
            splits += [split] * n
    return write_synthetic_cache(path, labels, splits, CLASSES, patches=patches)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return _cache(tmp_path_factory.mktemp("checks") / "cache")


@pytest.fixture(scope="module")
def run(cache: Path) -> Path:
    out = cache.parent / "run"
    ok("train-probe", "--cache", cache, "--probe", "linear", "--epochs", "1", "--out", out)
    return out


def _stand_in_prefix(cache: Path, copy: Path) -> Path:
    """A copy of `cache` whose manifest says its prefix token is a CNN's stand-in (global-average pool)."""
    shutil.copytree(cache, copy)
    manifest = Manifest.load(copy)
    extraction = dataclasses.replace(manifest.extraction, prefix=("gap",))
    dataclasses.replace(manifest, extraction=extraction).save(copy)
    return copy


def test_non_finite_tokens_stop_training_in_one_line(cache: Path, tmp_path: Path) -> None:
    """Before: exit 0, a NaN train loss, a test top-1 printed as if normal and a bare NaN in log.jsonl."""
    bad = tmp_path / "cache"
    shutil.copytree(cache, bad)
    shard = next((bad / "shards").glob("*.h5"))
    with h5py.File(shard, "r+") as f:
        tokens = f["tokens/-1"][...]
        tokens[0] = np.nan
        f["tokens/-1"][...] = tokens
    line = fails("train-probe", "-q", "--cache", bad, "--probe", "linear", "--epochs", "2", "--out", tmp_path / "run")
    assert "non-finite tokens" in line and "stepcli verify" in line
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_resume_refuses_a_demo_of_another_size_or_seed(demo_cache: Path, tmp_path: Path) -> None:
    """Before: another --size added clips and left wrong splits, another --seed reused the old tokens."""
    copy = tmp_path / "cache"
    shutil.copytree(demo_cache, copy)
    manifest = Manifest.load(copy)
    for key, value in (("clips_per_class", 5), ("seed", 1)):
        dataset = dataclasses.replace(manifest.dataset, source={**manifest.dataset.source, key: value})
        with pytest.raises(StepcliError, match=f"{key} .* -> {value}"):
            check_or_write_manifest(copy, dataclasses.replace(manifest, dataset=dataset))
    check_or_write_manifest(copy, manifest)  # the same options resume


def test_a_header_only_annotation_file_makes_no_cache(tmp_path: Path) -> None:
    annotations = tmp_path / "clips.csv"
    annotations.write_text("path,label,split\n")
    out = tmp_path / "cache"
    line = fails("extract", "--dataset", "csv", "--annotations", annotations, "--root", tmp_path, "--out", out)
    assert "lists no clips" in line
    assert not out.exists()


def test_compare_refuses_options_that_do_nothing(cache: Path, tmp_path: Path) -> None:
    base = ["compare", "--cache", cache, "--out", tmp_path / "out", "--probes", "linear"]
    assert "--folds goes with --shots" in fails(*base, "--folds", "2")
    assert "--permutations does nothing with --shots" in fails(*base, "--shots", "1", "--permutations", "5")
    assert not (tmp_path / "out").exists()


def test_evaluate_split_all_says_it_scores_training_clips(cache: Path, run: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", "--run", run, "--cache", cache, "--split", "all", "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert "--split all scores 18 of the 24 clips the run trained or selected on" in result.stderr


def test_demo_size_range_is_what_trains(tmp_path: Path) -> None:
    """Before: --size 1..3 extracted, then failed for want of a val or test split."""
    assert "range 4<=x" in fails("demo", "--size", "3", "--out", tmp_path / "demo")
    assert not (tmp_path / "demo").exists()


def test_compare_refuses_patch_probes_on_a_prefix_cache_before_training(tmp_path: Path) -> None:
    """Before: the CLS-only probes trained, then the first probe that needs patches refused."""
    prefix = _cache(tmp_path / "prefix", patches=0)
    line = fails("compare", "--cache", prefix, "--probes", "linear,attentive", "--out", tmp_path / "out")
    assert "--probes attentive" in line and "--tokens prefix" in line
    assert not (tmp_path / "out" / "runs").exists()


def test_an_ablation_row_a_backbone_cannot_run_is_left_out(cache: Path, tmp_path: Path, caplog) -> None:
    """step[cls=frame] needs each frame's own CLS, which a CNN or SigLIP cache does not hold: the
    ablation leaves that row out with a warning (before: two rows trained, then a refusal); asked
    for by name in --probes it is refused before any training."""
    from stepcli.cache.reader import FeatureCache

    stand_in = _stand_in_prefix(cache, tmp_path / "cnn")
    rows = ("step", "step[cls=frame]", "self-attention")
    train = TrainConfig(cache=stand_in, probe="", out=tmp_path / "out")
    cfg = CompareConfig(cache=stand_in, out=tmp_path / "out", probes=rows, train=train, optional_rows=True)
    with caplog.at_level(logging.WARNING):
        kept = runnable_rows(cfg, FeatureCache(stand_in))
    assert kept.probes == ("step", "self-attention")
    assert "row step[cls=frame] left out" in caplog.text
    line = fails("compare", "--cache", stand_in, "--probes", "step,step[cls=frame]", "--out", tmp_path / "out")
    assert "--probes step[cls=frame]" in line
    assert not (tmp_path / "out").exists()


def test_the_extract_hint_quotes_a_path_with_spaces() -> None:
    line = ExtractSummary(cached=1, total=1).report(Path("my caches/demo"))[0]
    assert line.endswith("stepcli inspect 'my caches/demo'")


def test_compare_retrains_a_run_whose_metrics_are_damaged(cache: Path, tmp_path: Path) -> None:
    """Before: compare reused the run, then refused its metrics.json, and every rerun did the same."""
    args = [
        "compare",
        "--cache",
        cache,
        "--probes",
        "linear",
        "--epochs",
        "1",
        "--permutations",
        "1",
        "--out",
        tmp_path,
    ]
    ok(*args)
    metrics = tmp_path / "runs" / "linear" / "metrics.json"
    metrics.write_text(metrics.read_text()[:20])
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "the run is damaged" in result.stderr and "training it again" in result.stderr
    assert json.loads(metrics.read_text())["probe"] == "linear"


def test_evaluate_names_a_class_mismatch_and_a_missing_layer_as_such(cache: Path, run: Path, tmp_path: Path) -> None:
    """Before: other classes were "another extraction", and a cache without the run's layer told the
    user to "pick one" of its layers, which evaluate has no option for."""
    labels, splits = [0, 1, 2] * 2, ["test"] * 6
    other = write_synthetic_cache(tmp_path / "other", labels, splits, ["open", "close", "jump"])
    line = fails("evaluate", "--run", run, "--cache", other, "--out", tmp_path / "a")
    assert "same extraction but other classes" in line and "'jump'" in line
    layer = tmp_path / "layer"
    shutil.copytree(cache, layer)
    manifest = Manifest.load(layer)
    extraction = dataclasses.replace(manifest.extraction, layer=-2, layers=(-2,))
    dataclasses.replace(manifest, extraction=extraction).save(layer)
    line = fails("evaluate", "--run", run, "--cache", layer, "--out", tmp_path / "b")
    assert "trained on layer -1" in line and "--layers including -1" in line and "pick one" not in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_compare_rerun_with_other_rows_drops_plots_of_the_earlier_rows(cache: Path, tmp_path: Path) -> None:
    """Before: the earlier best probe's confusion plot and frames/ stayed beside a comparison.json
    that no longer held their rows."""
    args = ["compare", "--cache", cache, "--epochs", "1", "--permutations", "1", "--out", tmp_path]
    ok(*args, "--probes", "knn")
    ok("frames", "--compare", tmp_path)
    assert (tmp_path / "frames" / "frames.json").is_file() and (tmp_path / "confusion_knn.png").is_file()
    ok(*args, "--probes", "knn")  # the same rows: the frames study still describes them
    assert (tmp_path / "frames" / "frames.json").is_file()
    ok(*args, "--probes", "linear")
    assert not (tmp_path / "frames").exists() and not (tmp_path / "confusion_knn.png").exists()
    assert (tmp_path / "confusion_linear.png").is_file()
