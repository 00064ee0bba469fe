"""A run directory with a missing or tampered config.json, a model.safetensors of the wrong shapes,
or a cache that moved: one line from shuffle-test, predict and compare, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fails, ok
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from stepcli.errors import StepcliError
from stepcli.probe.models import build_probe
from stepcli.probe.runs.rundir import load_run, read_run_config

COMPARE = ["--probes", "linear", "--epochs", "1", "--permutations", "1", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def compared(demo_cache: Path, tmp_path_factory) -> Path:
    """A finished `compare` of the linear probe: OUT/runs/linear is a run compare will reuse."""
    out = tmp_path_factory.mktemp("compared") / "out"
    ok("compare", "--cache", demo_cache, "--out", out, *COMPARE)
    return out


def _video(demo_cache: Path) -> Path:
    return next((demo_cache.parent / "demo-videos").glob("*/*.mp4"))


def _edit_config(run: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads((run / "config.json").read_text())
    edit(data)
    (run / "config.json").write_text(json.dumps(data))


def _wrong_shapes(run: Path) -> None:
    config = read_run_config(run)
    other = build_probe("linear", config.layout, config.num_classes + 3)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(run / "model.safetensors"))


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "config-truncated": (
        lambda run: (run / "config.json").write_text((run / "config.json").read_text()[:100]),
        "not valid JSON",
    ),
    "config-not-object": (lambda run: (run / "config.json").write_text("[1, 2]"), "does not describe a run"),
    "probe-config-string": (
        lambda run: _edit_config(run, lambda d: d.update(probe_config="linear")),
        "does not describe a run",
    ),
    "num-classes": (
        lambda run: _edit_config(run, lambda d: d["probe_config"].update(num_classes=5)),
        "config.json",
    ),
    "layout": (lambda run: _edit_config(run, lambda d: d["probe_config"].update(num_frames=9)), "config.json"),
    "unknown-probe": (lambda run: _edit_config(run, lambda d: d.update(probe="lstm")), "config.json"),
    "wrong-shapes": (_wrong_shapes, "does not hold the weights"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_run_is_one_line_everywhere(compared, demo_cache, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(compared, out)
    run = out / "runs" / "linear"
    edit, expected = DAMAGES[damage]
    edit(run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for args in (
        ["shuffle-test", "--run", run],
        ["predict", "--run", run, _video(demo_cache)],
        ["compare", "--cache", demo_cache, "--out", out, *COMPARE],
    ):
        line = fails(*args)
        assert expected in line and str(run) in line, (args[0], line)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before, "the damaged run is left as it was"


def test_missing_config_is_an_unfinished_run(compared, demo_cache, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(compared, out)
    run = out / "runs" / "linear"
    (run / "config.json").unlink()
    assert "not a complete stepcli run" in fails("shuffle-test", "--run", run)
    assert "not a complete stepcli run" in fails("predict", "--run", run, _video(demo_cache))
    ok("compare", "--cache", demo_cache, "--out", out, *COMPARE)  # compare finishes what was cut short
    assert read_run_config(run).probe == "linear"


def test_moved_cache(compared, demo_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(demo_cache, cache)
    run = tmp_path / "run"
    ok("train-probe", "--cache", cache, "--probe", "linear", "--out", run, "--epochs", "1", "--quiet")
    moved = tmp_path / "moved"
    cache.rename(moved)
    line = fails("shuffle-test", "--run", run)
    assert str(cache) in line and "--cache" in line, line
    ok("shuffle-test", "--run", run, "--cache", moved, "--permutations", "1", "--quiet")
    ok("predict", "--run", run, _video(demo_cache))  # predict needs the backbone, not the cache
    ok("compare", "--cache", moved, "--out", tmp_path / "cmp", *COMPARE)


def _leaves(data, path=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(data, list):
        for k, value in enumerate(data):
            yield from _leaves(value, (*path, k))
    yield path


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_config_loads_or_is_one_stepcli_error(compared, tmp_path_factory, data):
    """Any one value of config.json replaced (or its key dropped): the run loads or a StepcliError."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(compared / "runs" / "linear", run)
    config = json.loads((run / "config.json").read_text())
    path = data.draw(st.sampled_from([p for p in _leaves(config) if p]))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    (run / "config.json").write_text(json.dumps(config))
    try:
        load_run(run)
    except StepcliError as err:
        assert "\n" not in str(err)
