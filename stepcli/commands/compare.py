"""``stepcli compare``: every probe on one cache, shuffle-tested, in one table with plots."""

from __future__ import annotations

import click

from stepcli.commands import checks
from stepcli.commands.common import (
    PathArg,
    default_of,
    device_option,
    logger_option,
    pairs_option,
    permutations_option,
    print_comparison,
    seed_option,
    verbosity_options,
)
from stepcli.commands.parsing import parse_probe_specs, parse_seeds, parse_sweep
from stepcli.errors import StepcliError
from stepcli.probe.config import GPU_BATCH_SIZE, TrainConfig, default_batch_size
from stepcli.probe.studies.compare import CompareConfig, run_compare
from stepcli.probe.studies.layer_sweep import run_layer_sweep
from stepcli.probe.studies.shots import parse_shots, run_shots

DEFAULT = click.core.ParameterSource.DEFAULT


def _default(name: str):
    return default_of(CompareConfig, name)


def _train_default(name: str):
    return default_of(TrainConfig, name)


# the options of compare that go into every probe's training config
TRAIN_OPTIONS = ("epochs", "lr", "weight_decay", "batch_size", "device", "layer", "in_memory", "logger")


@click.command("compare")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--out", required=True, type=PathArg, help="Directory for runs, tables and plots (rerun to resume).")
@click.option("--probes", default=",".join(_default("probes")), show_default=True,
              help="Comma-separated probes, each optionally with options as its own row: "
              "'step,step[temporal_pe=false],attentive[temporal_pe=true]'. Also: ep, vjepa2.")  # fmt: skip
@click.option("--ablation", metavar="PROBE", help="The paper's ablation of PROBE (step: each of its three switches "
              "off in turn, and plain self-attention) as the rows, instead of --probes.")  # fmt: skip
@click.option("--epochs", type=checks.EPOCHS, default=_train_default("epochs"), show_default=True,
              help="Epochs per gradient-trained probe.")  # fmt: skip
@click.option("--lr", type=checks.LR, default=_train_default("lr"), show_default=True, help="Peak learning rate.")
@click.option("--weight-decay", type=checks.NON_NEGATIVE, default=_train_default("weight_decay"), show_default=True,
              help="AdamW weight decay of every gradient-trained probe.")  # fmt: skip
@click.option("--sweep", "sweep_specs", multiple=True, metavar="KEY=V1,V2,...",
              help="Tune every gradient-trained probe over the same grid (lr, weight_decay, warmup_epochs, clip_grad, "
              "or an option of the probes, see train-probe --option; repeatable): one head per combination, each probe's selected on val; the table says which values "
              "it chose, each run's sweep.json holds every head.")  # fmt: skip
@click.option(
    "--batch-size",
    type=checks.BATCH,
    help=f"Clips per step [{_train_default('batch_size')} on a CPU, {GPU_BATCH_SIZE} on a GPU].",
)
@permutations_option(CompareConfig)
@seed_option(CompareConfig, "Seed for training and permutations.")
@click.option("--seeds", "seed_list", help="Comma-separated training seeds: each probe once per seed (runs/<probe>/seed-<s>); "
              "the table shows mean ± std, comparison.json the per-seed numbers. A probe's seeds train in one pass as "
              "stacked heads, each with its own initialisation and batch order, as a run of that seed would.")  # fmt: skip
@pairs_option("Nearly-symmetric pairs, 'class a,class b' per line [cache's].")
@device_option(TrainConfig)
@click.option("--in-memory", type=click.Choice(["auto", "yes", "no"]), default=_train_default("in_memory"),
              show_default=True, help="Load the cache into RAM once for every probe (auto: if it takes at most "
              "half the available memory) or stream it from HDF5.")  # fmt: skip
@click.option("--layer", type=checks.LAYER, help="Which of the cache's layers (extract --layers) [its first].")
@logger_option
@click.option("--layers", help="all, or some of the cache's layers (-1,-4): one comparison per layer, "
              "plus a per-layer table and plot (OUT/layers.md, layers.png).")  # fmt: skip
@click.option("--shots", "shot_list", help="Low-data curve: e.g. 1,2,4,8 training clips per class (seeded, "
              "stratified), every probe evaluated on the full test split; OUT/shots.md/.csv/.json and shots.png.")  # fmt: skip
@click.option("--folds", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --shots: draws per K (fold f draws with --seed + f); error bars are their std.")  # fmt: skip
@verbosity_options
@click.pass_context
def compare_command(ctx, cache, out, probes, ablation, seed_list, layers, sweep_specs, shot_list, folds,
                    **kwargs) -> None:  # fmt: skip
    """Train the probes on one cache, shuffle-test each, write one comparison table and plots."""
    source, sources = ctx.get_parameter_source("probes"), click.core.ParameterSource
    # a written config.yaml spells out the default --probes beside its --ablation: only another list clashes
    from_file = source is sources.DEFAULT_MAP and probes == ",".join(_default("probes"))
    given = source is not sources.DEFAULT and not from_file
    if ablation is not None and given:
        raise StepcliError("give --probes or --ablation, not both")
    names = parse_probe_specs(probes, ablation)
    if kwargs["batch_size"] is None:
        kwargs["batch_size"] = default_batch_size(kwargs["device"])
    chosen = tuple(parse_seeds(seed_list)) if seed_list is not None else ()
    train = TrainConfig(
        cache=cache, probe="", out=out, seed=kwargs["seed"], **{k: kwargs.pop(k) for k in TRAIN_OPTIONS}
    )
    sweep = parse_sweep(sweep_specs)
    for spec in names:
        checks.check_sweep_values(spec.partition("[")[0].strip(), sweep)
    cfg = CompareConfig(cache=cache, out=out, probes=names, seeds=chosen, train=train, sweep=sweep,
                        optional_rows=ablation is not None, **kwargs)  # fmt: skip
    values = {"folds": folds, "permutations": cfg.permutations}
    given_here = {k for k, v in values.items() if _given(ctx, k, v)}
    if shot_list is None and "folds" in given_here:
        raise StepcliError("--folds goes with --shots (draws per K); without --shots it does nothing")
    if shot_list is not None and "permutations" in given_here:
        raise StepcliError("--permutations does nothing with --shots: the low-data curve scores each fold in "
                           "the original frame order only; leave it out, or run compare without --shots")  # fmt: skip
    if shot_list is not None:
        if layers is not None:
            raise StepcliError("give --shots or --layers, not both")
        paths = run_shots(cfg, parse_shots(shot_list), folds)
        click.echo(paths["md"].read_text())
        click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
        return
    if layers is not None:
        if cfg.layer is not None:
            raise StepcliError("give --layer or --layers, not both")
        paths = run_layer_sweep(cfg, layers)
        click.echo(paths["md"].read_text())
        click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
        return
    comparison = run_compare(cfg)
    print_comparison(comparison, out)


def _given(ctx: click.Context, name: str, value: object) -> bool:
    """Whether the user chose option `name`: on the command line, or in a config file with a value
    other than its default (a written config.yaml spells out every default)."""
    source = ctx.get_parameter_source(name)
    if source is DEFAULT:
        return False
    if source is click.core.ParameterSource.DEFAULT_MAP:
        return value != next(p.default for p in ctx.command.params if p.name == name)
    return True
