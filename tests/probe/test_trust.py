"""Trust as a property, over the whole probe registry: every number a run reports is reproduced from
what it saved, no selection sees a test label, and clips that repeat a train clip are counted.

A probe joins these checks by registering (`stepcli.probe.models.PROBES`): nothing here names one,
except the two a study table needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import check_reproduce, invoke, ok

from stepcli.cache.format import Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.cache.writer import ShardWriter
from stepcli.probe.evaluation.metrics import rounded
from stepcli.probe.evaluation.predict import predict_run
from stepcli.probe.models import PROBES
from stepcli.probe.runs.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = sorted(PROBES)
FAST = ["--epochs", "2", "--batch-size", "8", "--quiet"]
SWEEP = ["--sweep", "lr=3e-4,3e-3"]
#: what a run reports about its test clips; everything else in metrics.json was fixed before test was read
TEST_KEYS = ("num_clips", "top1", "top5", "mean_class_accuracy", "loss", "per_class_accuracy", "confusion_matrix",
             "ci95")  # fmt: skip


def _gradient(name: str) -> bool:
    return PROBES[name].capabilities.gradient_trained


def _run_dirs(out: Path) -> list[Path]:
    """Every run under `out`: a directory with config.json and metrics.json."""
    return sorted(p.parent for p in out.rglob("config.json") if (p.parent / "metrics.json").is_file())


def _test_part(metrics: dict) -> dict:
    return {k: metrics[k] for k in TEST_KEYS if k in metrics}


def _videos(demo_cache: Path, cache: FeatureCache, rows: np.ndarray) -> list[Path]:
    root = demo_cache.parent / "demo-videos"
    return [root / cache.clip_ids[r].rsplit("-", 1)[0] / f"{cache.clip_ids[r]}.mp4" for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_saved_run_reproduces_its_numbers(demo_cache: Path, tmp_path: Path, name: str) -> None:
    """A plain run, `--seeds 0,1` and a sweep: `evaluate` on its own cache, `shuffle-test`'s original
    order and `predict` on the test videos give exactly the numbers the run reported."""
    common = ["train-probe", "--cache", demo_cache, "--probe", name, *FAST]
    ok(*common, "--out", tmp_path / "plain")
    ok(*common, "--out", tmp_path / "seeds", "--seeds", "0,1")
    if _gradient(name):
        ok(*common, "--out", tmp_path / "sweep", *SWEEP)
    cache = FeatureCache(demo_cache)
    runs = _run_dirs(tmp_path)
    assert len(runs) == (4 if _gradient(name) else 3)
    for run_dir in runs:
        reported = json.loads((run_dir / "metrics.json").read_text())
        ok("evaluate", "--run", run_dir, "--cache", demo_cache, "--out", run_dir / "eval")
        assert _test_part(json.loads((run_dir / "eval/metrics.json").read_text())) == _test_part(reported), run_dir
        ok("shuffle-test", "--run", run_dir, "--permutations", "1", "--out", run_dir / "shuffled", "--quiet")
        shuffled = json.loads((run_dir / "shuffled/results.json").read_text())["summary"]["original"]
        assert shuffled["top1"] == reported["top1"], run_dir
        rows = load_run(run_dir).rows(cache, "test")
        predictions = predict_run(run_dir, _videos(demo_cache, cache, rows))
        hits = [p.top[0][0] == cache.class_names[cache.labels[r]] for p, r in zip(predictions, rows, strict=True)]
        assert rounded(sum(hits) / len(hits)) == reported["top1"], run_dir  # as exactly as metrics.json holds it


def _copy(source: Path, out: Path, corrupt_test: bool) -> Path:
    """`source` written again by the cache writer with a second layer of seeded noise (a layer
    that tells nothing, which selecting a layer on test would pick on the corrupted copy) and, with
    `corrupt_test`, every test clip's label moved to another class; all else is the same."""
    cache = FeatureCache(source)
    rng = np.random.default_rng(0)
    num_classes = len(cache.class_names)
    with ShardWriter(out, clips_per_shard=1000, layers=(-1, -2)) as writer:
        for row, clip_id in enumerate(cache.clip_ids):
            frames, stamps = cache.timing(row)
            tokens = cache.tokens([row]).astype(np.float32)  # [K=1, T, P+N, D]
            label = int(cache.labels[row])
            if corrupt_test and cache.splits[row] == "test":
                label = (label + 1 + row % (num_classes - 1)) % num_classes
            writer.add(clip_id, label, cache.splits[row], [tokens, rng.normal(0, 1, tokens.shape)], frames[None],
                       stamps[None], group=str(cache.groups[row]))  # fmt: skip
    manifest = cache.manifest
    extraction = type(manifest.extraction)(**{**manifest.extraction.__dict__, "layers": (-1, -2)})
    Manifest(extraction=extraction, dataset=manifest.dataset).save(out)
    return out


@pytest.fixture(scope="module")
def label_pair(demo_cache: Path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blind")
    clean, corrupt = _copy(demo_cache, root / "clean", False), _copy(demo_cache, root / "corrupt", True)
    a, b = FeatureCache(clean), FeatureCache(corrupt)
    test = a.splits == "test"
    assert (a.labels[test] != b.labels[test]).all() and (a.labels[~test] == b.labels[~test]).all()
    return clean, corrupt


def _selections(out: Path) -> dict:
    """Everything a study chose or reported about val: metrics.json without its test part, every
    epoch's log, sweep.json without test numbers, layers.json's per-layer val and selection."""
    found = {}
    for run_dir in _run_dirs(out):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        where = str(run_dir.relative_to(out))
        found[where] = {k: v for k, v in metrics.items() if k not in TEST_KEYS}
        epochs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        found[where + "/log"] = [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in epochs]
        if (run_dir / "sweep.json").is_file():
            sweep = json.loads((run_dir / "sweep.json").read_text())
            found[where + "/sweep"] = [
                sweep["selected"],
                [(h["values"], h["best_epoch"], h["val"]) for h in sweep["heads"]],
            ]
    if (out / "layers.json").is_file():
        layers = json.loads((out / "layers.json").read_text())
        found["layers"] = {p: (s["layer"], s["val_top1"]) for p, s in layers["selected_on_val"].items()}
    return found


def _tests(out: Path) -> list:
    return [_test_part(json.loads((d / "metrics.json").read_text())) for d in _run_dirs(out)]


def _blind(tmp_path: Path, label_pair: tuple[Path, Path], *args: str) -> None:
    outs = [tmp_path / "clean", tmp_path / "corrupt"]
    for cache, out in zip(label_pair, outs, strict=True):
        result = invoke(*[a if a != "CACHE" else cache for a in args], "--out", out)
        assert result.exit_code == 0, result.output + repr(result.exception)
    clean, corrupt = (_selections(out) for out in outs)
    assert clean and clean == corrupt  # every selection and every val number unchanged
    assert _tests(outs[0]) != _tests(outs[1])  # while the test numbers did move


@pytest.mark.parametrize("name", NAMES)
def test_no_selection_sees_a_test_label(label_pair, tmp_path: Path, name: str) -> None:
    """Every test label corrupted: the sweep's head, each head's best epoch, a fitted probe's own
    choice (logreg's C, knn's k) and every val number are unchanged; only test numbers move."""
    sweep = SWEEP if _gradient(name) else []
    _blind(tmp_path, label_pair, "train-probe", "--cache", "CACHE", "--probe", name, *FAST, *sweep)


STUDIES = {
    "layers": ["--probes", "linear,knn", "--layers", "all"],
    "shots": ["--probes", "linear", "--shots", "1", "--folds", "2"],
    "seeds-sweep": ["--probes", "linear", "--seeds", "0,1", *SWEEP],
}


@pytest.mark.parametrize("study", list(STUDIES))
def test_no_study_selection_sees_a_test_label(label_pair, tmp_path: Path, study: str) -> None:
    """`compare --layers` selects each probe's layer on val, `--shots` draws its folds and selects
    without test, and seeds with a sweep each select their own head on val."""
    permutations = [] if "--shots" in STUDIES[study] else ["--permutations", "1"]  # --shots scores original order only
    _blind(tmp_path, label_pair, "compare", "--cache", "CACHE", *permutations, "--epochs", "2", "--quiet",
           *STUDIES[study])  # fmt: skip


def test_leakage_is_counted_and_shown_and_twins_in_one_split_are_not(demo_cache: Path, tmp_path: Path) -> None:
    """The demo's twins share a split: nothing is printed or recorded. Move half the train twins'
    partners to test (time-reversed frames of a train clip) and one exact copy to val: counted."""
    cache = FeatureCache(demo_cache)
    leaky = tmp_path / "leaky"
    moved, seen = 0, set()
    with ShardWriter(leaky, clips_per_shard=1000) as writer:
        for row, clip_id in enumerate(cache.clip_ids):
            frames, stamps = cache.timing(row)
            group, split = str(cache.groups[row]), cache.splits[row]
            if split == "train" and group in seen and moved < 6:
                split, moved = "test", moved + 1
            seen.add(group)
            writer.add(clip_id, int(cache.labels[row]), split, [cache.tokens([row])], frames[None], stamps[None])
        writer.add("copy", int(cache.labels[0]), "val", [cache.tokens([0])], *(t[None] for t in cache.timing(0)))
    cache.manifest.save(leaky)
    for source, expected in ((demo_cache, None), (leaky, {"val": 1, "test": 6})):
        out = tmp_path / f"compare-{source.name}"
        result = ok("compare", "--cache", source, "--out", out, "--probes", "knn", "--permutations", "1")
        warned = [line for line in result.stderr.splitlines() if "have a train clip's frames" in line]
        metrics = json.loads((out / "runs/knn/metrics.json").read_text())
        assert metrics.get("leakage") == expected and len(warned) == (0 if expected is None else 1)
        header = result.stdout.splitlines()[0]
        assert ("val+test = train" in header) == (expected is not None)
    assert "| 7 |" in result.stdout


def test_frames_reads_the_layer_its_comparison_was_run_on(label_pair, tmp_path: Path) -> None:
    """`frames --compare OUT/layer<L>`: the intact test top-1 is that layer's comparison's, not the first layer's."""
    clean, _ = label_pair
    out = tmp_path / "layers"
    ok("compare", "--cache", clean, "--out", out, "--probes", "linear", "--layers", "-2", "--epochs", "2",
       "--permutations", "1", "--quiet")  # fmt: skip
    ok("frames", "--compare", out / "layer-2", "--quiet")
    (row,) = json.loads((out / "layer-2/comparison.json").read_text())["rows"]
    assert json.loads((out / "layer-2/frames/frames.json").read_text())["drops"][0]["top1"] == row["top1"]
    # the layer study's page: its table (layers.md's cells), its plot and the study's command
    page, table = (out / "report.html").read_text(), (out / "layers.md").read_text().splitlines()
    assert all(f">{c.strip()}<" in page for line in table[:1] + table[2:3] for c in line.strip("|").split("|"))
    assert page.count("data:image/png") == 1
    assert check_reproduce(out / "report.html")[-1] == f"stepcli compare --config {out.resolve() / 'config.yaml'}"
