"""Every option of every command, driven with generated values (zero, negative, huge, nan, inf,
empty, non-numeric text, unknown `--option` keys and values): the command exits 0, 1 or 2, never
with a traceback, and a refusal (exit 2) is one line on stderr that wrote nothing.

Most examples run in this process (click's runner, in a fresh directory); a few run the real
console script. Inputs that would start real work are a tiny synthetic cache (train-probe) or
missing files (the rest), and the generated numbers that are valid are small, so an accepted
value ends in seconds. STEPCLI_FUZZ_EXAMPLES sets the in-process examples per command (a few
dozen in the suite, thousands for a long run), STEPCLI_FUZZ_PROCESS_EXAMPLES those through the
console script.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import (
    STEPCLI,
    TINY_BACKBONE,
    TINY_IMAGE_SIZE,
    child_env,
    error_line,
    fails,
    fails_in_process,
    write_synthetic_cache,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stepcli.cli import cli
from stepcli.probe.models import PROBES, probe_options

UNSET = getattr(click.core, "UNSET", None)  # click 8.3: what an option without a default holds
EXAMPLES = int(os.environ.get("STEPCLI_FUZZ_EXAMPLES", "50"))
PROCESS_EXAMPLES = int(os.environ.get("STEPCLI_FUZZ_PROCESS_EXAMPLES", "4"))
LONG = "STEPCLI_FUZZ_EXAMPLES" in os.environ
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

# valid numbers stay small (so that accepted values finish fast); the rest is what breaks parsers
NUMBERS = st.one_of(st.integers(-3, 3).map(str), st.sampled_from([str(2**31), str(2**63), str(-(2**63)), "9" * 30]))
WEIRD = st.sampled_from(["", " ", "-0", "0.0", "3.5", "1e-3", "-1e-3", "nan", "-nan", "inf", "-inf", "1e309", "abc",
                         "1,2", "x=1", "0x10", "1_0", "true", "none", "ünï", "a b", "-", ",", "=", "/", "."])  # fmt: skip
VALUES = st.one_of(NUMBERS, WEIRD, st.floats(allow_subnormal=False).map(repr), st.text(max_size=6))
CLASSES = ["open", "close", "push"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """3 classes x (4 train, 2 val, 2 test) clips of random tokens: a probe trains in well under a second."""
    labels, splits = [], []
    for label in range(3):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            labels += [label] * n
            splits += [split] * n
    return write_synthetic_cache(tmp_path_factory.mktemp("fuzz") / "cache", labels, splits, CLASSES)


def base_args(command: str, cache: Path) -> list[str]:
    """What each command runs on: missing inputs that end any accepted run with one line, except
    train-probe on the tiny cache, which really trains (one epoch, unless generated otherwise)."""
    return {
        "extract": ["--dataset", "csv", "--annotations", "missing.csv", "--out", "out"],
        "inspect": ["missing-cache"],
        "verify": ["missing-cache"],
        "pairs": ["--dataset", "demo"],
        "train-probe": ["--cache", str(cache), "--probe", "linear", "--out", "run", "--epochs", "1", "--device", "cpu"],
        "predict": ["--run", "missing-run", "missing.mp4"],
        "shuffle-test": ["--run", "missing-run", "--device", "cpu"],
        "evaluate": ["--run", "missing-run", "--cache", str(cache), "--out", "out", "--device", "cpu"],
        "compare": ["--cache", "missing-cache", "--out", "out", "--device", "cpu"],
        "frames": ["--compare", "missing-compare", "--device", "cpu"],
        "demo": ["--out", "out", "--backbone", "openclip:stepcli-no-such-model"],
        "backbones": ["--spec", "openclip:stepcli-no-such-model"],
        "report": ["missing-study", "--out", "out"],
    }[command]


# valid values that would start long work (the demo's 720 videos, a real backbone), never generated
AVOID = {("extract", "dataset"): {"demo"}, ("demo", "backbone"): set()}


def _flags(command: str) -> list[click.Parameter]:
    return [p for p in cli.commands[command].params if p.name not in ("quiet", "verbose", "help")]


@st.composite
def option_values(draw, command: str) -> list[str]:
    """1 or 2 of the command's options (or its argument), each with a generated value."""
    args: list[str] = []
    for param in draw(st.lists(st.sampled_from(_flags(command)), min_size=1, max_size=2, unique_by=lambda p: p.name)):
        if isinstance(param, click.Argument):
            args += [draw(VALUES)]
            continue
        name = param.opts[0]
        if param.is_flag:
            args += [draw(st.sampled_from([o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]))]
            continue
        value = VALUES
        offer_default = (command, param.name) not in AVOID and not param.multiple
        if offer_default and param.default not in (None, UNSET):  # valid values too, to get past parsing
            value = st.one_of(st.just(str(param.default)), VALUES)
        if param.name == "probe":
            value = st.one_of(st.sampled_from(list(PROBES)), VALUES)
        if isinstance(param.type, click.Choice):
            valid = [c for c in param.type.choices if c not in AVOID.get((command, param.name), ())]
            value = st.one_of(st.sampled_from(valid), VALUES)
        if param.name == "option_pairs":
            value = st.tuples(st.sampled_from(sorted({k for p in PROBES for k in probe_options(p)}) + ["bogus", ""]),
                              VALUES).map("=".join)  # fmt: skip
        if param.name == "sweep_specs":
            value = st.tuples(st.sampled_from(["lr", "weight_decay", "clip_grad", "depth", "bogus"]),
                              st.lists(VALUES, max_size=2).map(",".join)).map("=".join)  # fmt: skip
        args += [name, draw(value)]
    return args


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check(command: str, exit_code: int, stdout: str, stderr: str, before: set[str], after: set[str]) -> None:
    """The property, the same in this process and through the console script."""
    assert exit_code in (0, 1, 2), (exit_code, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    event(f"{command}: exit {exit_code}")
    if exit_code == 2:
        error_line(stderr)  # exactly one line besides warnings
        assert after == before, f"a refusal wrote {sorted(after - before)}"


@pytest.mark.parametrize("command", sorted(cli.commands))
@fuzz
@given(data=st.data())
def test_every_option_in_process(command, data, tiny_cache, one_thread):
    args = data.draw(option_values(command), label="options")
    with tempfile.TemporaryDirectory(prefix="stepcli-fuzz-") as tmp, contextlib.chdir(tmp):
        before = _tree(Path(tmp))
        result = CliRunner().invoke(cli, [command, *base_args(command, tiny_cache), *args])
        after = _tree(Path(tmp))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the bug hypothesis shrinks and reports
    check(command, result.exit_code, result.stdout, result.stderr, before, after)


@fuzz
@given(data=st.data())
def test_extract_options_reach_the_backbone(data, tiny_cache, one_thread):
    """extract past the dataset: a one-clip list (its video missing, so an accepted run fails the
    clip, exit 1) and the tiny backbone, which every accepted value loads."""
    args = data.draw(option_values("extract"), label="options")
    with tempfile.TemporaryDirectory(prefix="stepcli-fuzz-") as tmp, contextlib.chdir(tmp):
        Path("list.csv").write_text("path,label,split\nmissing.mp4,open,train\n")
        base = ["--dataset", "csv", "--annotations", "list.csv", "--out", "out", "--backbone", TINY_BACKBONE,
                "--image-size", str(TINY_IMAGE_SIZE), "--workers", "0"]  # fmt: skip
        before = _tree(Path(tmp))
        result = CliRunner().invoke(cli, ["extract", *base, *args])
        after = _tree(Path(tmp))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    check("extract", result.exit_code, result.stdout, result.stderr, before, after)


@settings(max_examples=PROCESS_EXAMPLES, deadline=None, derandomize=not LONG)
@given(command=st.sampled_from(["extract", "train-probe", "compare", "evaluate"]), data=st.data())
def test_options_through_the_console_script(command, data, tiny_cache):
    args = data.draw(option_values(command))
    with tempfile.TemporaryDirectory(prefix="stepcli-fuzz-") as tmp:
        before = _tree(Path(tmp))
        done = subprocess.run([str(STEPCLI), command, *base_args(command, tiny_cache), *args], cwd=tmp,
                              env=child_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
        check(command, done.returncode, done.stdout, done.stderr, before, _tree(Path(tmp)))


# ---- the values the issue reported, each one line and exit 2 -------------------------------

EXTRACT = ["extract", "--dataset", "demo", "--out"]
REPORTED = [
    (["--frames", "-3"], "'--frames': -3 is not in the range 1<=x<=1024"),
    (["--image-size", "7"], "--image-size 7: openclip:ViT-S-32 cannot encode 7 px frames"),
    (["--image-size", "0"], "'--image-size': 0 is not in the range 1<=x<=4096"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range 1<=x<=4096"),
    (["--workers", "-1"], "'--workers': -1 is not in the range 0<=x<=256"),
    (["--workers", "-2"], "'--workers': -2 is not in the range 0<=x<=256"),
    (["--size", "0"], "'--size': 0 is not in the range 1<=x<=1000000"),
]


@pytest.mark.parametrize("option, message", REPORTED, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_reported_extract_values_are_refused(tmp_path, option, message):
    line = fails(*EXTRACT, tmp_path / "out", *option)
    assert message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--option", "depth=abc"], "--option depth='abc': probe 'step' needs an integer in 1..4096"),
        (["--clip-grad", "-1"], "'--clip-grad': -1.0 is not in the range x>0"),
        (["--lr", "nan"], "'--lr': 'nan' is not a finite number"),
        (["--option", "num_heads=0"], "--option num_heads=0: probe 'step' needs an integer in 1..4096 or none"),
    ],
)
def test_reported_train_values_are_refused(tmp_path, tiny_cache, option, message):
    line = fails("train-probe", "--cache", tiny_cache, "--probe", "step", "--out", tmp_path / "run", *option)
    assert message in line, line
    assert not (tmp_path / "run").exists()


def test_reported_values_through_the_console_script(tmp_path, tiny_cache):
    assert "-3 is not in the range" in fails_in_process(*EXTRACT, tmp_path / "out", "--frames", "-3")
    assert "--image-size 7: openclip:ViT-S-32 cannot encode 7 px frames" in fails_in_process(
        *EXTRACT, tmp_path / "out", "--image-size", "7"
    )
    line = fails_in_process("train-probe", "--cache", tiny_cache, "--probe", "step", "--out", tmp_path / "run",
                            "--option", "depth=abc")  # fmt: skip
    assert "depth='abc'" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
