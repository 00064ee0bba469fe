"""What several commands share: options, each defined once with its default read from a config
dataclass, and how a comparison is printed.

A command's option takes its default from the field of the same name in the command's config
dataclass (`default_of`), so a default is written in one place and `--help` cannot drift from
what the library does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stepcli.commands.checks import PERMUTATIONS, SEED, PathArg, check_device
from stepcli.device import DEVICES
from stepcli.log import set_verbosity
from stepcli.probe.config import TrainConfig
from stepcli.probe.studies.compare import Comparison
from stepcli.probe.training.loggers import LOGGERS


def default_of(config: type, name: str) -> Any:
    """The default of field `name` of dataclass `config` (a field without a default is an error)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{config.__name__}.{name} has no default")
    raise TypeError(f"{config.__name__} has no field {name}")


def device_option(config: type) -> Callable:
    return click.option(
        "--device", type=click.Choice(DEVICES), default=default_of(config, "device"), show_default=True,
        callback=check_device,
        help="Where to run: auto takes the GPU when there is one.",
    )  # fmt: skip


def seed_option(config: type, help: str) -> Callable:
    return click.option("--seed", type=SEED, default=default_of(config, "seed"), show_default=True, help=help)


def permutations_option(config: type) -> Callable:
    return click.option(
        "--permutations", type=PERMUTATIONS, default=default_of(config, "permutations"), show_default=True,
        help="Seeded random frame orders per shuffle test (K).",
    )  # fmt: skip


def logger_option(command: Callable) -> Callable:
    """`--logger`: training curves beyond each run's log.csv."""
    return click.option(
        "--logger", type=click.Choice(list(LOGGERS)), default=default_of(TrainConfig, "logger"), show_default=True,
        help="Where training curves go: each run writes log.csv (one row per epoch per head) always; tensorboard: "
        "event files in RUN/tensorboard as well (pip install 'stepcli[tensorboard]').",
    )(command)  # fmt: skip


def pairs_option(help: str) -> Callable:
    return click.option("--pairs", "pairs_file", type=PathArg, help=help)


def _quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        set_verbosity(-1)


def _verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        set_verbosity(1)


def verbosity_options(command: Callable) -> Callable:
    """`-q/--quiet` and `-v/--verbose` on a subcommand too, so they work after its name."""
    command = click.option("-v", "--verbose", count=True, expose_value=False, callback=_verbose,
                           help="Also show debug output.")(command)  # fmt: skip
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet,
                        help="Only warnings and errors (no progress, no per-epoch lines).")(command)  # fmt: skip


def print_comparison(comparison: Comparison, out: Path) -> None:
    """The table on stdout, where it was written and the plots on stderr."""
    click.echo(comparison.markdown)
    written = [*comparison.tables.values(), *comparison.plots.values()]
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in written) + f"\nruns: {out / 'runs'}", err=True)
