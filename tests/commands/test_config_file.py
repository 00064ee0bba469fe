"""`--config FILE.yaml`: a study is a file. Every command writes the resolved config.yaml that
reruns it to the same bytes; a bad key or value in a file is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, check_reproduce, fails, ok


def _tokens(cache: Path) -> list[np.ndarray]:
    arrays = []
    for shard in sorted((cache / "shards").glob("*.h5")):
        with h5py.File(shard) as f:
            arrays += [f[name][()] for name in sorted(f) if isinstance(f[name], h5py.Dataset)]
    return arrays


@pytest.mark.slow
def test_extract_reruns_from_its_config_yaml_to_the_same_tokens(tmp_path) -> None:
    cache = tmp_path / "cache"
    ok("extract", "--dataset", "demo", "--out", cache, "--size", 1, "--frames", 3, "--backbone", TINY_BACKBONE,
       "--image-size", TINY_IMAGE_SIZE, "--workers", 0, "--layers", "-1,-2")  # fmt: skip
    written = yaml.safe_load((cache / "config.yaml").read_text())
    assert written["command"] == "extract" and written["layers"] == "-1,-2" and written["frames"] == 3
    again = tmp_path / "cache-again"
    ok("extract", "--config", cache / "config.yaml", "--out", again, "--root", cache / "videos")
    tokens, tokens_again = _tokens(cache), _tokens(again)
    assert tokens and all(np.array_equal(a, b) for a, b in zip(tokens, tokens_again, strict=True))


@pytest.mark.slow
def test_train_shuffle_and_compare_rerun_from_their_config_yaml_to_the_same_bytes(demo_cache, tmp_path) -> None:
    cache = demo_cache
    run = tmp_path / "run"
    ok("train-probe", "--cache", cache, "--probe", "linear", "--out", run, "--epochs", 2)
    ok("train-probe", "--config", run / "config.yaml", "--out", tmp_path / "run-again")
    assert (run / "metrics.json").read_bytes() == (tmp_path / "run-again" / "metrics.json").read_bytes()

    ok("shuffle-test", "--run", run, "--permutations", 3)
    shuffle = run / "shuffle"
    ok("shuffle-test", "--config", shuffle / "config.yaml", "--out", tmp_path / "shuffle-again")
    assert (shuffle / "results.json").read_bytes() == (tmp_path / "shuffle-again" / "results.json").read_bytes()

    study = tmp_path / "compare"
    ok("compare", "--cache", cache, "--out", study, "--probes", "linear", "--epochs", 1,
       "--sweep", "lr=0.001,0.003", "--seeds", "0,1", "--permutations", 2)  # fmt: skip
    again = tmp_path / "compare-again"
    ok("compare", "--config", study / "config.yaml", "--out", again)
    # results only (runs relative to each --out); the wall-clock times beside it, in timing.json
    assert (study / "comparison.json").read_bytes() == (again / "comparison.json").read_bytes()
    # and so does a nested shuffle results.json (its run relative to the study)
    nested_results = Path("runs", "linear", "seed-1", "shuffle", "results.json")
    assert (study / nested_results).read_bytes() == (again / nested_results).read_bytes()
    assert "train_time_s" in (again / "timing.json").read_text()
    assert check_reproduce(again / "report.html")[-1].startswith("stepcli compare --config")
    # every nested run holds the config.yaml of a train-probe that retrains it
    nested = again / "runs" / "linear" / "seed-1"
    written = yaml.safe_load((nested / "config.yaml").read_text())
    assert (written["command"], written["seed"], written["sweep"]) == ("train-probe", 1, ["lr=0.001,0.003"])


def test_a_nested_run_retrains_from_its_config_yaml_to_the_same_bytes(demo_cache, tmp_path) -> None:
    study = tmp_path / "compare"
    ok("compare", "--cache", demo_cache, "--out", study, "--probes", "linear", "--epochs", 1, "--permutations", 1)
    run = study / "runs" / "linear"
    ok("train-probe", "--config", run / "config.yaml", "--out", tmp_path / "again")
    assert (run / "metrics.json").read_bytes() == (tmp_path / "again" / "metrics.json").read_bytes()


def test_command_line_overrides_the_file_and_the_file_overrides_defaults(demo_cache, tmp_path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(f"cache: {demo_cache}\nprobe: linear\nepochs: 1\nweight-decay: 0.01\nout: {tmp_path / 'a'}\n")
    ok("train-probe", "--config", config, "--out", tmp_path / "b", "--epochs", 2)
    written = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert (written["epochs"], written["weight_decay"], written["lr"]) == (2, 0.01, 0.001)
    assert written["out"] == str((tmp_path / "b").absolute()) and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("epocs: 3\n", ["epocs", "epochs, in_memory"]),  # the misspelt key and the keys it takes
        ("epochs: 0\n", ["epochs", "1<=x<=100000"]),
        ("in_memory: maybe\n", ["in_memory", "auto", "yes", "no"]),
        ("command: compare\n", ["stepcli compare", "stepcli train-probe"]),
        ("- epochs\n", ["mapping"]),
        ("epochs: [1\n", ["not valid YAML", "line"]),
        ("epochs: {a: 1}\n", ["epochs", "a mapping"]),  # a value of the wrong shape, not a TypeError
        ("sweep: [[lr, 1]]\n", ["sweep", "a list"]),
        (b"\xff\xfe epochs: 1\n", ["not UTF-8 text"]),
        ("epochs: 1.5\n", ["epochs", "1.5", "integer"]),  # was silently 1
        ("epochs: true\n", ["epochs", "True", "integer"]),
        ("lr: false\n", ["lr", "False", "number"]),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, names) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = fails("train-probe", "--config", config, "--cache", tmp_path, "--probe", "linear", "--out", tmp_path / "r")
    assert str(config) in line and all(name in line for name in names), line
    assert not (tmp_path / "r").exists()


def test_a_missing_config_file_is_one_line(tmp_path) -> None:
    line = fails("inspect", "--config", tmp_path / "none.yaml", tmp_path)
    assert "none.yaml" in line
