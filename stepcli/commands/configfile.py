"""`--config FILE.yaml` on every command, and the resolved `config.yaml` every command writes.

A config file's keys are the command's own options (the long name, `-` or `_`), its values what
the option takes (a list for a repeatable option). The file becomes click's `default_map`, so an
option given on the command line overrides it, and every value goes through the option's own
type and range checks. A misspelt key or a bad value is one line naming the file, the key and
what it allows.

After a command succeeds, the directory it wrote (`--out`, see `output_dir`) gets `config.yaml`:
every option as click resolved it (the defaults are the library's config records', through
`default_of`), the command's name and the stepcli version, so that `stepcli CMD --config
OUT/config.yaml` reruns it. Every run a study trained under OUT (a compare's probes, --seeds'
seed runs, the cells of --shots and --layers) gets the config.yaml of an equivalent `train-probe`
(`write_run_configs`), so any one of them retrains alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import yaml

from stepcli.commands.checks import PathArg
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.probe.models.specs import format_value
from stepcli.probe.runs.rundir import CONFIG, MODEL, read_run_config
from stepcli.probe.studies.page import CONFIG_YAML
from stepcli.probe.studies.shuffle import SHUFFLE_DIR
from stepcli.probe.training.sweep import SWEEP, SweepRecord
from stepcli.version import __version__

#: keys a written config.yaml holds beside the options
COMMAND_KEY, VERSION_KEY = "command", "stepcli_version"
#: the command whose config.yaml every run a study trains gets (found on the CLI group, not imported:
#: commands never import each other)
TRAIN_PROBE = "train-probe"

log = logging.getLogger(__name__)


def option_keys(command: click.Command) -> dict[str, click.Parameter]:
    """A config file's keys for `command`: each option's long name (dashes as underscores), each argument's name."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        if not param.expose_value or param.name == "config":
            continue
        if isinstance(param, click.Option):
            long = [o for o in param.opts if o.startswith("--")]
            name = long[0][2:] if long else param.name
        else:
            name = param.name
        keys[name.replace("-", "_")] = param
    return keys


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path`; anything else is a one-line error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise StepcliError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise StepcliError(f"--config {path} is not UTF-8 text; give a YAML file of 'key: value' lines") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StepcliError(f"--config {path} is not valid YAML{where}; write one 'key: value' per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise StepcliError(f"--config {path} must be a mapping of option names to values, e.g. 'epochs: 12'")
    return data


def config_defaults(ctx: click.Context, command: click.Command, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """`data` as a `default_map` for `command`: keys checked against its options, values against their types."""
    name = ctx.info_name or command.name
    written_for = data.get(COMMAND_KEY)
    if written_for is not None and written_for != name:
        raise StepcliError(f"--config {path} is for `stepcli {written_for}`, not `stepcli {name}`")
    keys = option_keys(command)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if key in (COMMAND_KEY, VERSION_KEY):
            continue
        param = keys.get(key.replace("-", "_"))
        if param is None:
            raise StepcliError(
                f"--config {path}: stepcli {name} has no option {key!r}; the keys it takes: {', '.join(sorted(keys))}"
            )
        if value is None:  # null: as if not given
            continue
        value = _shaped(path, key, param, value)
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as err:
            raise StepcliError(f"--config {path}: {key}: {' '.join(err.format_message().split())}") from None
        defaults[param.name] = value
    version = data.get(VERSION_KEY)
    if version is not None and str(version) != __version__:
        log.warning(f"warning: --config {path} was written by stepcli {version}, this is {__version__}")
    return defaults


SCALARS = (str, int, float, bool)


def _shaped(path: Path, key: str, param: click.Parameter, value: Any) -> Any:
    """A file's value in the shape the option takes: a list for a repeatable option (one item
    listed alone), else one value (a list of items comma-joined, as the option reads them)."""
    repeatable = param.multiple or param.nargs == -1
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, SCALARS) for item in items):
        shape = "a mapping" if any(isinstance(item, dict) for item in items) else "a list inside a list"
        want = "a list of values" if repeatable else "one value"
        raise StepcliError(f"--config {path}: {key}: {shape} is not a value of --{key.replace('_', '-')}; give {want}")
    for item in items:
        if isinstance(param.type, click.types.IntParamType) and (
            isinstance(item, bool) or (isinstance(item, float) and not item.is_integer())
        ):  # click would take int(1.5) == 1 and int(True) == 1 silently
            raise StepcliError(f"--config {path}: {key}: {item!r} is not an integer; give a whole number")
        if isinstance(param.type, click.types.FloatParamType) and isinstance(item, bool):
            raise StepcliError(f"--config {path}: {key}: {item!r} is not a number; give one, e.g. 0.001")
    if repeatable:
        return items
    return ",".join(map(str, items)) if isinstance(value, list) else value


def _load(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    defaults = config_defaults(ctx, ctx.command, value, read_config(value))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _written(param: click.Parameter, value: Any) -> Any:
    """A resolved value as the config file takes it back (paths absolute, a parsed list comma-joined)."""
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, tuple | list):
        items = [_written(param, v) for v in value]
        return items if param.multiple or param.nargs == -1 else ",".join(map(str, items))
    return value


def resolved_config(ctx: click.Context) -> dict[str, Any]:
    """Every option of the running command as click resolved it, keyed as a config file is."""
    params = ctx.params
    body = {key: _written(p, params[p.name]) for key, p in option_keys(ctx.command).items() if p.name in params}
    return {COMMAND_KEY: ctx.info_name, VERSION_KEY: __version__, **body}


def output_dir(name: str, params: dict[str, Any]) -> Path | None:
    """Where command `name` wrote its results: `--out`, or shuffle-test's default RUN/shuffle."""
    if params.get("out") is not None:
        return Path(params["out"])
    if name == "shuffle-test":
        return Path(params["run_dir"]) / SHUFFLE_DIR
    return None


def _dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write_resolved(ctx: click.Context) -> Path | None:
    """config.yaml in the command's output directory, when it has one, and in every run a study
    trained under it (`write_run_configs`)."""
    out = output_dir(ctx.info_name or "", ctx.params)
    if out is None or not out.is_dir():
        return None
    root = ctx.find_root()
    if isinstance(root.command, click.Group) and (train := root.command.get_command(root, TRAIN_PROBE)) is not None:
        write_run_configs(out, train)
    path = out / CONFIG_YAML
    write_atomic(path, _dump(resolved_config(ctx)))
    return path


def equivalent_config(command: click.Command, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The config.yaml `stepcli NAME` writes when given `values` (keyed as a config file is) and
    its defaults for the rest: what a study writes for a part it ran through the library."""
    defaults = config_defaults(click.Context(command, info_name=name), command, Path(f"<{name}>"), values)
    return resolved_config(command.make_context(name, [], default_map=defaults))


def train_probe_values(run_dir: Path, train_probe: click.Command) -> dict[str, Any]:
    """The options of `train_probe` (the `train-probe` command) that retrain the run in `run_dir`,
    from its config.json (and, for a tuned run, its sweep.json's grid)."""
    keys = option_keys(train_probe)
    train = read_run_config(run_dir).train
    sweep = SweepRecord.load(run_dir).swept if (Path(run_dir) / SWEEP).is_file() else {}
    values: dict[str, Any] = {f.name: getattr(train, f.name) for f in fields(train) if f.name in keys}
    values |= {
        "cache": str(Path(train.cache).absolute()), "out": str(Path(run_dir).absolute()),
        "option": [f"{k}={format_value(v)}" for k, v in train.probe_options.items() if k not in sweep],
        "sweep": [f"{k}={','.join(map(format_value, v))}" for k, v in sweep.items()],
    }  # fmt: skip
    return values


def write_run_configs(study: Path, train_probe: click.Command) -> list[Path]:
    """RUN/config.yaml of an equivalent `train-probe` in every run directory under `study` but
    `study` itself (a compare's runs, --seeds' seed-<s> runs, the cells of --shots and --layers),
    so `stepcli train-probe --config RUN/config.yaml --out NEW` retrains any of them."""
    written = []
    for config in sorted(Path(study).glob(f"**/{CONFIG}")):
        run = config.parent
        if run == Path(study) or not (run / MODEL).is_file():
            continue
        try:
            resolved = equivalent_config(train_probe, TRAIN_PROBE, train_probe_values(run, train_probe))
        except StepcliError as err:  # a damaged run the study did not read: say so, keep the rest
            log.warning(f"warning: no {CONFIG_YAML} for {run}: {err}")
            continue
        write_atomic(run / CONFIG_YAML, _dump(resolved))
        written.append(run / CONFIG_YAML)
    return written


def with_config(command: click.Command) -> click.Command:
    """`command` with `--config FILE.yaml`, writing the resolved config.yaml when it succeeds."""
    command.params.insert(
        0,
        click.Option(
            ["--config"], type=PathArg, is_eager=True, expose_value=False, callback=_load,
            help="YAML file of this command's options (keys: the long option names); options on the command line win. "
            "Every run writes the resolved one as OUT/config.yaml.",
        ),
    )  # fmt: skip
    callback: Callable = command.callback

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            result = callback(*args, **kwargs)
        except SystemExit as done:
            if done.code in (0, None):
                write_resolved(click.get_current_context())
            raise
        write_resolved(click.get_current_context())
        return result

    command.callback = run
    return command
