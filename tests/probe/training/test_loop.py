"""`stepcli train-probe` end to end on the demo cache: every probe, runs, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from conftest import fails, fails_in_process, make_demo_cache, ok

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import classification_metrics
from stepcli.probe.models import PROBES
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.training.loop import TrainConfig, train_probe

FAST = ["--epochs", "2", "--batch-size", "8", "--quiet"]


def train(cache: Path, probe: str, out: Path, *extra: str) -> str:
    return ok("train-probe", "--cache", cache, "--probe", probe, "--out", out, *FAST, *extra).output


@pytest.fixture(scope="module")
def runs(demo_cache: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    for name in list(PROBES):
        train(demo_cache, name, root / name)
    return {name: root / name for name in list(PROBES)}


@pytest.fixture(scope="module")
def other_cache(tiny_openclip, tmp_path_factory) -> Path:
    """Another extraction (32 px instead of 64) with one clip per class, all in train."""
    out = tmp_path_factory.mktemp("other") / "cache"
    make_demo_cache(out, clips_per_class=1, image_size=32)
    return out


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_trains_and_its_run_loads(name: str, runs: dict[str, Path], demo_cache: Path) -> None:
    run_dir = runs[name]
    for file in ("config.json", "model.safetensors", "metrics.json", "timing.json", "splits.json", "log.jsonl"):
        assert (run_dir / file).is_file(), file
    run = load_run(run_dir, FeatureCache(demo_cache))
    assert not run.probe.training and run.probe.name == name
    assert run.cache_path == demo_cache.resolve()
    metrics = run.metrics
    assert metrics["num_params"] == run.probe.num_params() >= (0 if name == "knn" else 1)  # knn learns nothing
    assert metrics["num_clips"] == 12 and 0 <= metrics["top1"] <= 1 and 0 <= metrics["mean_class_accuracy"] <= 1
    assert set(metrics["per_class_accuracy"]) == set(run.class_names)
    assert np.asarray(metrics["confusion_matrix"]).sum() == 12 and metrics["val"]["num_clips"] == 12
    assert run.timing["train_time_s"] >= 0
    assert run.config.cache.extraction == FeatureCache(demo_cache).manifest.extraction
    assert run.config.layout == FeatureCache(demo_cache).layout and run.config.probe == name
    if name not in ("logreg", "knn"):  # fitted in closed form: one log line, no epochs
        assert 1 <= metrics["best_epoch"] <= 2 and len((run_dir / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("name", ["step", "logreg"])
def test_loaded_probe_reproduces_reported_test_metrics(name: str, runs: dict[str, Path], demo_cache: Path) -> None:
    cache = FeatureCache(demo_cache)
    run = load_run(runs[name], cache)
    rows = run.rows(cache, "test")
    logits = predict_logits(run.probe, cache, rows)
    assert logits.shape == (1, 12, 12)
    again = classification_metrics(logits[0], cache.labels[rows], cache.class_names)
    assert again["top1"] == run.metrics["top1"]
    assert again["confusion_matrix"] == run.metrics["confusion_matrix"]


def test_predict_logits_reads_once_for_many_orders(runs: dict[str, Path], demo_cache: Path) -> None:
    cache = FeatureCache(demo_cache)
    run = load_run(runs["step"])
    rows = run.rows(cache, "test")
    orders = [np.arange(8), np.arange(8)[::-1]]
    logits = predict_logits(run.probe, cache, rows, batch_size=5, frame_orders=orders)
    assert logits.shape == (2, 12, 12)
    np.testing.assert_allclose(logits[0], predict_logits(run.probe, cache, rows)[0], atol=1e-5)
    reversed_tokens = predict_logits(run.probe, cache, rows[::-1].copy(), frame_orders=[orders[1]])
    np.testing.assert_allclose(logits[1], reversed_tokens[0][::-1], atol=1e-5)


def test_same_seed_gives_identical_metrics(demo_cache: Path, tmp_path: Path) -> None:
    """metrics.json holds no wall-clock time (that is timing.json), so it compares byte for byte."""
    for out in ("a", "b"):
        train(demo_cache, "step", tmp_path / out, "--seed", "3")
    assert (tmp_path / "a/metrics.json").read_bytes() == (tmp_path / "b/metrics.json").read_bytes()


@pytest.mark.slow
def test_streaming_and_in_memory_agree(demo_cache: Path, tmp_path: Path) -> None:
    train(demo_cache, "attentive", tmp_path / "memory", "--in-memory", "yes")
    train(demo_cache, "attentive", tmp_path / "stream", "--in-memory", "no")
    assert json.loads((tmp_path / "stream/config.json").read_text())["runtime"]["in_memory"] is False
    assert (tmp_path / "memory/metrics.json").read_bytes() == (tmp_path / "stream/metrics.json").read_bytes()
    # the GPU default: reader processes, each with its own HDF5 handles
    train_probe(TrainConfig(cache=demo_cache, probe="attentive", out=tmp_path / "readers", epochs=2, batch_size=8,
                            in_memory="no", workers=2))  # fmt: skip
    assert json.loads((tmp_path / "readers/config.json").read_text())["runtime"]["workers"] == 2
    assert (tmp_path / "memory/metrics.json").read_bytes() == (tmp_path / "readers/metrics.json").read_bytes()


def test_shots_draws_exactly_k_train_clips_per_class(demo_cache: Path, tmp_path: Path) -> None:
    train(demo_cache, "linear", tmp_path / "run", "--shots", "1")
    run = load_run(tmp_path / "run")
    cache = FeatureCache(demo_cache)
    train_rows = run.rows(cache, "train")
    assert np.bincount(cache.labels[train_rows], minlength=12).tolist() == [1] * 12
    assert run.metrics["train_clips"] == 12 and len(run.rows(cache, "test")) == 12


def test_step_switches_reach_the_probe(demo_cache: Path, tmp_path: Path) -> None:
    train(demo_cache, "step", tmp_path / "run", "--no-temporal-pe", "--cls", "mean", "--block", "no-ff")
    options = load_run(tmp_path / "run").config.probe_options
    assert (options["temporal_pe"], options["cls"], options["block"]) == (False, "mean", "no-ff")


@pytest.fixture
def evaluate_command(monkeypatch) -> str:
    """A throwaway subcommand that evaluates a run on a cache, through the real CLI error handling."""

    @click.command("evaluate-run")
    @click.argument("run_dir")
    @click.argument("cache")
    def evaluate_run(run_dir: str, cache: str) -> None:
        feature_cache = FeatureCache(cache)
        run = load_run(run_dir, feature_cache)
        predict_logits(run.probe, feature_cache, run.rows(feature_cache, "test"))

    monkeypatch.setitem(cli.commands, "evaluate-run", evaluate_run)
    return "evaluate-run"


def test_run_on_a_cache_from_another_extraction_is_refused(runs, other_cache, evaluate_command) -> None:
    line = fails(evaluate_command, runs["step"], other_cache)
    assert "image_size: 64 -> 32" in line and "another extraction" in line


def test_corrupt_checkpoint_is_a_one_line_error(runs, demo_cache, evaluate_command, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in runs["attentive"].iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "model.safetensors is missing or corrupt" in fails(evaluate_command, broken, demo_cache)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    assert "corrupt" in fails(evaluate_command, broken, demo_cache)


def test_unknown_probe_is_a_one_line_error(demo_cache, tmp_path) -> None:
    line = fails_in_process("train-probe", "--cache", demo_cache, "--probe", "lstm", "--out", tmp_path / "r")
    assert "unknown probe 'lstm'" in line and all(name in line for name in PROBES)
    assert not (tmp_path / "r").exists()


def test_empty_split_is_a_one_line_error(other_cache, tmp_path) -> None:
    """One clip per class, all of it train: nothing is left to validate or test on."""
    line = fails("train-probe", "--cache", other_cache, "--probe", "linear", "--out", tmp_path / "r")
    assert "no 'val' clips" in line and "train 12" in line


@pytest.mark.parametrize(
    "args",
    [["--shots", "0"], ["--shots", "5"], ["--train-fraction", "0"], ["--epochs", "0"]],
    ids=["shots-0", "shots-more-than-class", "fraction-0", "epochs-0"],
)
def test_bad_training_options_are_one_line_errors(args, demo_cache, tmp_path) -> None:
    fails("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", tmp_path / "r", *args)


@pytest.mark.parametrize("switch", [["--cls", "frame"], ["--block", "standard"]])
@pytest.mark.parametrize("probe", ["linear", "attentive", "self-attention", "logreg"])
def test_step_switch_for_another_probe_is_an_error(switch, probe, demo_cache, tmp_path) -> None:
    args = ["train-probe", "--cache", demo_cache, "--probe", probe, "--out", tmp_path / "r", *switch]
    assert "only apply to --probe step" in fails(*args)


@pytest.mark.parametrize("probe", ["linear", "logreg", "ep"])
def test_temporal_pe_switch_names_the_probes_that_take_it(probe, demo_cache, tmp_path) -> None:
    args = ["train-probe", "--cache", demo_cache, "--probe", probe, "--out", tmp_path / "r", "--temporal-pe"]
    assert "only apply to --probe attentive, self-attention, step, vjepa2" in fails(*args)


def test_out_that_is_not_a_run_is_refused(demo_cache, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    line = fails("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", tmp_path)
    assert "not a stepcli run directory" in line and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("probe", "option", "value"), [("step", "depth", 2), ("attentive", "num_heads", 4)])
def test_any_probe_option_reaches_the_probe(demo_cache: Path, tmp_path: Path, probe: str, option: str, value) -> None:
    out = tmp_path / probe
    ok("train-probe", "--cache", demo_cache, "--probe", probe, "--out", out, "--epochs", "1", "-q",
       "--option", f"{option}={value}")  # fmt: skip
    run = load_run(out)
    assert run.config.probe_options[option] == value and run.probe.config()[option] == value
    default = PROBES[probe](FeatureCache(demo_cache).layout, 12).config()[option]
    assert default != value  # the option changed something


def test_unknown_probe_option_lists_the_valid_ones(demo_cache: Path, tmp_path: Path) -> None:
    line = fails("train-probe", "--cache", demo_cache, "--probe", "attentive", "--out", tmp_path / "r",
                 "--option", "cls=frame")  # fmt: skip
    assert "valid options:" in line and "num_heads" in line and not (tmp_path / "r").exists()
