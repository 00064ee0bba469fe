"""The command line as a whole: defaults come from the config dataclasses, -q/-v, one-line errors."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click
import pytest
from conftest import fails_in_process, invoke, ok

from stepcli.cache.records import TokenLayout
from stepcli.cli import cli
from stepcli.experiment import DemoConfig
from stepcli.extract.datasets import DatasetOptions
from stepcli.extract.pipeline import ExtractConfig
from stepcli.probe.evaluation.predict import PredictConfig
from stepcli.probe.models import build_probe
from stepcli.probe.studies.compare import CompareConfig
from stepcli.probe.studies.cross_cache import EvaluateConfig
from stepcli.probe.studies.shuffle import ShuffleConfig
from stepcli.probe.training.loop import TrainConfig

# each command and the config dataclasses its options are read into
CONFIGS = {
    "extract": (ExtractConfig, DatasetOptions),
    "train-probe": (TrainConfig,),
    "shuffle-test": (ShuffleConfig,),
    "compare": (CompareConfig, TrainConfig),
    "demo": (DemoConfig,),
    "predict": (PredictConfig,),
    "evaluate": (EvaluateConfig,),
}
# what each command requires, so that parsing it fills in every other option's default
REQUIRED = {
    "extract": ["--dataset", "demo", "--out", "c"],
    "train-probe": ["--cache", "c", "--probe", "step", "--out", "r"],
    "shuffle-test": ["--run", "r"],
    "compare": ["--cache", "c", "--out", "o"],
    "demo": [],
    "predict": ["--run", "r", "v.mp4"],
    "evaluate": ["--run", "r", "--cache", "c", "--out", "o"],
}
# click parameter name -> config field name, where the option is spelled differently
RENAMED = {"pairs_file": "pairs"}
# options whose default depends on the device: unset when parsed, the config's (CPU) default named in --help
ON_DEVICE = {"batch_size"}


def _field_defaults(configs: tuple[type, ...]) -> dict:
    defaults = {}
    for config in configs:
        for f in dataclasses.fields(config):
            if f.default is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default_factory())
    return defaults


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_help_defaults_equal_config_defaults(command: str) -> None:
    """Every option that sets a config field shows that field's default, in --help and when parsed."""
    defaults = _field_defaults(CONFIGS[command])
    params = [p for p in cli.commands[command].params if isinstance(p, click.Option) and not p.hidden]
    parsed = cli.commands[command].make_context(command, list(REQUIRED[command])).params
    checked = 0
    for param in params:
        name = RENAMED.get(param.name, param.name)
        if name not in defaults or param.required:
            continue
        expected = defaults[name]
        if name == "probes":  # a comma-separated list on the command line
            expected = ",".join(expected)
        if name in ON_DEVICE and command in ("train-probe", "compare"):
            assert parsed[param.name] is None and f"[{expected} on a CPU" in param.help, (command, param.name)
            continue
        assert parsed[param.name] == expected, (command, param.name, parsed[param.name], expected)
        checked += 1
    assert checked >= 2
    text = ok(command, "--help").stdout
    for param in params:
        name = RENAMED.get(param.name, param.name)
        if param.show_default and name in defaults and defaults[name] is not None and not param.is_flag:
            shown = ",".join(defaults[name]) if name == "probes" else defaults[name]
            # help text is wrapped (even inside a default): compare with all whitespace removed; a
            # range follows the default after a ';'
            squeezed = "".join(text.split())
            assert any("".join(f"[default: {shown}{end}".split()) in squeezed for end in "];"), (command, param.name)


def test_demo_size_in_extract_help_is_the_demo_default() -> None:
    text = " ".join(ok("extract", "--help").stdout.split())
    assert f"demo: clips per class [{DemoConfig.size}]" in text


def test_quiet_and_verbose_set_the_stepcli_logger_only(demo_cache, tmp_path) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    args = ["train-probe", "--cache", demo_cache, "--probe", "linear", "--epochs", "1"]
    loud = ok(*args, "--out", tmp_path / "loud")
    assert "train-probe: linear on" in loud.stderr and "epoch 1" in loud.stderr
    before = invoke("-q", *args, "--out", tmp_path / "q1")  # before the command name
    after = invoke(*args, "--out", tmp_path / "q2", "--quiet")  # or after it
    for result in (before, after):
        assert result.exit_code == 0 and result.stderr.strip() == "", result.stderr
    assert logging.getLogger("stepcli").level == logging.WARNING
    ok("-v", "inspect", demo_cache)
    assert logging.getLogger("stepcli").level == logging.DEBUG
    assert (root.level, root.handlers) == (level, handlers)


def test_user_errors_are_value_errors_for_library_callers(tmp_path) -> None:
    """A script calling the library catches bad input as the ValueError it is, not as a crash."""
    from stepcli.cache.reader import FeatureCache

    with pytest.raises(ValueError, match="not a stepcli cache"):
        FeatureCache(tmp_path)
    with pytest.raises(ValueError, match="unknown probe 'nope'"):
        build_probe("nope", TokenLayout(num_frames=2, num_prefix=1, num_patches=1, dim=4), 3)


@pytest.mark.slow
def test_real_console_script_prints_one_line_without_traceback(tmp_path) -> None:
    """The installed `stepcli`, in its own process: what a user sees on stderr."""
    assert "not a stepcli cache" in fails_in_process("inspect", tmp_path)
    line = fails_in_process("train-probe", "--cache", tmp_path, "--probe", "step", "--out", tmp_path / "r",
                            "--option", "depth")  # fmt: skip
    assert "not KEY=VALUE" in line


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_takes_quiet_and_verbose(command: str) -> None:
    names = {opt for p in cli.commands[command].params for opt in getattr(p, "opts", [])}
    assert {"-q", "--quiet", "-v", "--verbose"} <= names, command


def test_no_command_imports_another() -> None:
    """Commands share options through `common`, parsing through `parsing` and option ranges
    through `checks`, never each other."""
    import ast

    import stepcli.commands as package

    folder = Path(package.__file__).parent
    shared = {"stepcli.commands.common", "stepcli.commands.parsing", "stepcli.commands.checks"}
    commands = [p for p in folder.glob("*.py") if p.stem not in ("__init__", "common", "parsing", "checks")]
    assert len(commands) >= len(cli.commands) - 1
    for path in commands:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stepcli.commands"):
                package_import = node.module == "stepcli.commands"  # from stepcli.commands import checks
                modules = {f"{node.module}.{a.name}" for a in node.names} if package_import else {node.module}
                assert modules <= shared, f"{path.name} imports {modules - shared}"


def _options() -> list[tuple[str, click.Option]]:
    return [(name, p) for name, command in sorted(cli.commands.items()) for p in command.params
            if isinstance(p, click.Option)]  # fmt: skip


@pytest.mark.parametrize(
    "command,option", [(n, p) for n, p in _options()], ids=[f"{n} {p.opts[-1]}" for n, p in _options()]
)
def test_every_option_says_what_it_does_its_default_and_range(command: str, option: click.Option) -> None:
    """Driven by the command tree: a new option joins by existing. A help text; a default that is
    shown (click's show_default, or `[...]` in the text for one that depends on something); a number
    with a range type (`commands/checks.py`), which click's help prints."""
    assert (option.help or "").strip(), f"{command} {option.opts[-1]} has no help"
    unset = option.default in (None, (), [], False) or type(option.default).__name__ == "Sentinel"
    if not (option.is_flag or option.count or unset):
        assert option.show_default or "[" in option.help, f"{command} {option.opts[-1]}: its default is not shown"
    if isinstance(option.type, click.types.IntParamType | click.types.FloatParamType) and not option.count:
        assert isinstance(option.type, click.IntRange | click.FloatRange), f"{command} {option.opts[-1]}: no range"


def test_an_option_shared_with_extract_takes_what_extract_takes() -> None:
    """`backbones --tokens` is extract's --tokens: the same choices, not free text that extract refuses."""
    extract = {p.name: p for p in cli.commands["extract"].params}
    for name in ("tokens", "image_size", "pool"):
        option = next(p for p in cli.commands["backbones"].params if p.name == name)
        assert type(option.type) is type(extract[name].type), name
        assert getattr(option.type, "choices", None) == getattr(extract[name].type, "choices", None), name
