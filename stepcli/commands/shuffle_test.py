"""``stepcli shuffle-test``: does a trained probe use frame order?"""

from __future__ import annotations

import click

from stepcli.commands import checks
from stepcli.commands.common import (
    PathArg,
    default_of,
    device_option,
    pairs_option,
    permutations_option,
    seed_option,
    verbosity_options,
)
from stepcli.probe.studies.report import shuffle_markdown
from stepcli.probe.studies.shuffle import ShuffleConfig, run_shuffle_test


@click.command("shuffle-test")
@click.option("--run", "run_dir", required=True, type=PathArg, help="Run directory made by `stepcli train-probe`.")
@click.option("--cache", type=PathArg, help="Feature cache [the one the run was trained on].")
@permutations_option(ShuffleConfig)
@seed_option(ShuffleConfig, "Seed of the permutations.")
@pairs_option("Nearly-symmetric pairs, 'class a,class b' per line [cache's].")
@click.option("--out", type=PathArg, help="Output directory [RUN/shuffle].")
@click.option("--batch-size", type=checks.BATCH, default=default_of(ShuffleConfig, "batch_size"), show_default=True,
              help="Clips per forward pass.")  # fmt: skip
@device_option(ShuffleConfig)
@verbosity_options
def shuffle_test_command(run_dir, cache, pairs_file, out, **kwargs) -> None:
    """Evaluate a run's test clips with frames in original, reversed and K shuffled orders.

    Reports accuracy per order, the prediction flip rate against the original order, per-class
    changes and accuracy on nearly-symmetric pairs; writes results.json and a PNG bar chart. It
    reads cached tokens only and never runs the backbone.
    """
    result, paths = run_shuffle_test(run_dir, cache=cache, pairs_file=pairs_file, out=out, cfg=ShuffleConfig(**kwargs))
    click.echo(shuffle_markdown(result))
    click.echo(f"results: {paths['results']}\nchart:   {paths['chart']}", err=True)
