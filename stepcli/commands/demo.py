"""``stepcli demo``: the whole experiment from nothing — generate, extract, compare, report."""

from __future__ import annotations

import sys
import time

import click

from stepcli.commands import checks
from stepcli.commands.common import PathArg, default_of, print_comparison, verbosity_options
from stepcli.experiment import QUICK, DemoConfig, run_demo
from stepcli.extract.budget import TokenBudget


def _default(name: str):
    return default_of(DemoConfig, name)


@click.command("demo")
@click.option("--out", type=PathArg, default=_default("out"), show_default=True, help="Output directory.")
@click.option("--size", type=checks.DEMO_CLIPS_PER_CLASS, default=_default("size"), show_default=True,
              help=f"Demo clips per class [--quick: {QUICK['size']}].")  # fmt: skip
@click.option("--epochs", type=checks.EPOCHS, default=_default("epochs"), show_default=True,
              help=f"Epochs per probe [--quick: {QUICK['epochs']}].")  # fmt: skip
@click.option("--permutations", type=checks.PERMUTATIONS, default=_default("permutations"), show_default=True,
              help=f"Shuffled frame orders per probe [--quick: {QUICK['permutations']}].")  # fmt: skip
@click.option("--quick", is_flag=True, help="Tiny dataset, 1 epoch: checks the pipeline, numbers mean nothing.")
# hidden: for tests and benchmarks (a tiny backbone), not part of the demo a user runs
@click.option("--backbone", default=_default("backbone"), hidden=True, show_default=True,
              help="As extract --backbone.")  # fmt: skip
@click.option("--image-size", type=checks.IMAGE_SIZE, default=_default("image_size"), hidden=True, show_default=True,
              help="As extract --image-size.")  # fmt: skip
@click.option("--workers", type=checks.WORKERS, default=_default("workers"), hidden=True, show_default=True,
              help="As extract --workers.")  # fmt: skip
@click.option("--pool", default=_default("pool"), show_default=True,
              help="Patch-grid pooling window of the demo's cache (extract --pool); 1: every patch token.")  # fmt: skip
@verbosity_options
@click.pass_context
def demo_command(ctx: click.Context, quick: bool, **kwargs) -> None:
    """Generate the demo videos, extract them, compare every probe; print the table and plots.

    The demo's classes come in pairs that are exact time-reversals of each other (brighten /
    dim, open / close, ...): one frame tells the pair, only the frame order tells the class.
    """
    start = time.monotonic()
    checks.check_backbone(kwargs["backbone"], kwargs["image_size"], (-1,))
    TokenBudget.parse(kwargs["pool"])
    if quick:  # --quick changes the defaults; what the user gave still wins
        defaulted = {k for k in QUICK if ctx.get_parameter_source(k) is click.core.ParameterSource.DEFAULT}
        kwargs.update({k: QUICK[k] for k in defaulted})
        ctx.params.update({k: QUICK[k] for k in defaulted})  # OUT/config.yaml: the values it ran with
    summary, comparison = run_demo(DemoConfig(**kwargs))
    print_comparison(comparison, kwargs["out"] / "compare")
    click.echo(f"demo finished in {time.monotonic() - start:.0f} s; table: {comparison.tables['md']}", err=True)
    sys.exit(1 if summary.failed else 0)
