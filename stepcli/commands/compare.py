"""``stepcli compare``: every probe on one cache, shuffle-tested, in one table with plots."""

from __future__ import annotations

import click

from stepcli import StepcliError
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
from stepcli.commands.parsing import parse_seeds
from stepcli.probe.studies.compare import CompareConfig, run_compare
from stepcli.probe.studies.layer_sweep import run_layer_sweep
from stepcli.probe.training.config import GPU_BATCH_SIZE, TrainConfig, default_batch_size


def _default(name: str):
    return default_of(CompareConfig, name)


def _train_default(name: str):
    return default_of(TrainConfig, name)


# the options of compare that go into every probe's training config
TRAIN_OPTIONS = ("epochs", "lr", "batch_size", "device", "layer")


@click.command("compare")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--out", required=True, type=PathArg, help="Directory for runs, tables and plots (rerun to resume).")
@click.option("--probes", default=",".join(_default("probes")), show_default=True, help="Comma-separated probes.")
@click.option("--epochs", type=int, default=_train_default("epochs"), show_default=True,
              help="Epochs per gradient-trained probe.")  # fmt: skip
@click.option("--lr", type=float, default=_train_default("lr"), show_default=True, help="Peak learning rate.")
@click.option(
    "--batch-size",
    type=int,
    help=f"Clips per step [{_train_default('batch_size')} on a CPU, {GPU_BATCH_SIZE} on a GPU].",
)
@permutations_option(CompareConfig)
@seed_option(CompareConfig, "Seed for training and permutations.")
@click.option("--seeds", "seed_list", help="Comma-separated training seeds: each probe once per seed (runs/<probe>/seed-<s>); "
              "the table shows mean ± std, comparison.json the per-seed numbers. A probe's seeds train in one pass as "
              "stacked heads, each with its own initialisation and batch order, as a run of that seed would.")  # fmt: skip
@pairs_option("Nearly-symmetric pairs, 'class a,class b' per line [cache's].")
@device_option(TrainConfig)
@click.option("--layer", type=int, help="Which of the cache's layers (extract --layers) [its first].")
@click.option("--layers", help="all, or some of the cache's layers (-1,-4): one comparison per layer, "
              "plus a per-layer table and plot (OUT/layers.md, layers.png).")  # fmt: skip
@verbosity_options
def compare_command(cache, out, probes, seed_list, layers, **kwargs) -> None:
    """Train the probes on one cache, shuffle-test each, write one comparison table and plots."""
    names = tuple(p.strip() for p in probes.split(",") if p.strip())
    if kwargs["batch_size"] is None:
        kwargs["batch_size"] = default_batch_size(kwargs["device"])
    chosen = tuple(parse_seeds(seed_list)) if seed_list is not None else ()
    train = TrainConfig(
        cache=cache, probe="", out=out, seed=kwargs["seed"], **{k: kwargs.pop(k) for k in TRAIN_OPTIONS}
    )
    cfg = CompareConfig(cache=cache, out=out, probes=names, seeds=chosen, train=train, **kwargs)
    if layers is not None:
        if cfg.layer is not None:
            raise StepcliError("give --layer or --layers, not both")
        paths = run_layer_sweep(cfg, layers)
        click.echo(paths["md"].read_text())
        click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
        return
    comparison = run_compare(cfg)
    print_comparison(comparison, out)
