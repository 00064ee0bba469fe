"""``stepcli compare``: every probe on one cache, shuffle-tested, in one table with plots."""

from __future__ import annotations

import click

from stepcli.commands.common import (
    PathArg,
    default_of,
    device_option,
    pairs_option,
    permutations_option,
    print_comparison,
    seed_option,
    verbosity_options,
)
from stepcli.commands.train_probe import parse_seeds
from stepcli.probe.compare import CompareConfig, run_compare


def _default(name: str):
    return default_of(CompareConfig, name)


@click.command("compare")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--out", required=True, type=PathArg, help="Directory for runs, tables and plots (rerun to resume).")
@click.option("--probes", default=",".join(_default("probes")), show_default=True, help="Comma-separated probes.")
@click.option("--epochs", type=int, default=_default("epochs"), show_default=True,
              help="Epochs per gradient-trained probe.")  # fmt: skip
@click.option("--lr", type=float, default=_default("lr"), show_default=True, help="Peak learning rate.")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Clips per step.")
@permutations_option(CompareConfig)
@seed_option(CompareConfig, "Seed for training and permutations.")
@click.option("--seeds", "seed_list", help="Comma-separated training seeds: each probe once per seed (runs/<probe>/seed-<s>); "
              "the table shows mean ± std, comparison.json the per-seed numbers.")  # fmt: skip
@pairs_option("Nearly-symmetric pairs, 'class a,class b' per line [cache's].")
@device_option(CompareConfig)
@verbosity_options
def compare_command(cache, out, probes, seed_list, **kwargs) -> None:
    """Train the probes on one cache, shuffle-test each, write one comparison table and plots."""
    names = tuple(p.strip() for p in probes.split(",") if p.strip())
    chosen = tuple(parse_seeds(seed_list)) if seed_list is not None else ()
    comparison = run_compare(CompareConfig(cache=cache, out=out, probes=names, seeds=chosen, **kwargs))
    print_comparison(comparison, out)
