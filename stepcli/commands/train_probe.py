"""``stepcli train-probe``: stage two, one probe trained from a feature cache into a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli.commands import checks
from stepcli.commands.common import PathArg, default_of, device_option, logger_option, seed_option, verbosity_options
from stepcli.commands.parsing import parse_seeds, parse_sweep, probe_option_values
from stepcli.probe.config import GPU_BATCH_SIZE, default_batch_size
from stepcli.probe.models import PROBES, probe_class, probe_options
from stepcli.probe.models.step import BLOCKS, CLS_MODES
from stepcli.probe.studies.seeds import seeds_markdown, train_seeds
from stepcli.probe.training.loop import TrainConfig, train_probe


def _default(name: str):
    return default_of(TrainConfig, name)


def _options_help() -> str:
    listed = "; ".join(f"{name}: {', '.join(probe_options(name)) or '(none)'}" for name in PROBES)
    return f"A probe option KEY=VALUE, repeatable. Options per probe: {listed}."


@click.command("train-probe")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--probe", "probe", required=True, help=f"Probe: {', '.join(PROBES)}.")
@click.option("--out", required=True, type=PathArg, help="Run directory to write.")
@click.option("--epochs", type=checks.EPOCHS, default=_default("epochs"), show_default=True,
              help="Passes over the train split (a fitted probe, logreg or knn, fits once).")  # fmt: skip
@click.option("--lr", type=checks.LR, default=_default("lr"), show_default=True, help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=checks.NON_NEGATIVE, default=_default("weight_decay"), show_default=True,
              help="AdamW weight decay.")  # fmt: skip
@click.option(
    "--batch-size",
    type=checks.BATCH,
    help=f"Clips per step [{_default('batch_size')} on a CPU, {GPU_BATCH_SIZE} on a GPU].",
)
@click.option("--warmup-epochs", type=checks.NON_NEGATIVE, default=_default("warmup_epochs"), show_default=True,
              help="Epochs of linear learning-rate warmup before the cosine decay (fractions allowed).")  # fmt: skip
@click.option("--clip-grad", type=checks.POSITIVE, default=_default("clip_grad"), show_default=True,
              help="Gradient-norm clipping threshold.")  # fmt: skip
@seed_option(TrainConfig, "Seed of the probe's initialisation, the split fallbacks and the batch order.")
@device_option(TrainConfig)
@click.option("--shots", type=click.IntRange(min=1), help="Train on K clips per class (seeded, stratified).")
@click.option(
    "--train-fraction", type=checks.Finite(0, 1, min_open=True), help="Train on this fraction of each class (seeded)."
)
@click.option("--in-memory", type=click.Choice(["auto", "yes", "no"]), default=_default("in_memory"), show_default=True,
              help="Load the cache into RAM (auto: if it takes at most half the available memory) or stream from HDF5.")  # fmt: skip
@click.option("--workers", type=checks.WORKERS, help="HDF5 reader processes when streaming [0 on CPU, 2 on a GPU].")
@click.option(
    "--layer", type=checks.LAYER, help="Which of the cache's layers (extract --layers) to train on [its first]."
)
@logger_option
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help=_options_help())
@click.option(
    "--temporal-pe/--no-temporal-pe",
    default=None,
    help="step: learnable frame-wise temporal encoding [on]; "
    "attentive, self-attention, vjepa2: the same, as an order-aware control [off].",
)
@click.option("--cls", type=click.Choice(CLS_MODES), help="step: what to classify from [global].")
@click.option("--block", type=click.Choice(list(BLOCKS)), help="step: block type [simplified].")
@click.option("--sweep", "sweep_specs", multiple=True, metavar="KEY=V1,V2,...",
              help="Train one head per combination of swept values in one pass over the cache (lr, weight_decay, "
              "warmup_epochs, clip_grad or a probe option; repeatable) and keep the best on val; sweep.json holds "
              "every head's val and test numbers. Memory and time grow with the number of heads.")  # fmt: skip
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the probe's forward (worth it on a GPU); where it cannot compile, a warning and eager.",
)
@click.option("--seeds", help="Comma-separated seeds: one run per seed in OUT/seed-<s>, mean ± std in OUT/seeds.json. "
              "The seeds train in one pass as stacked heads, each with its own initialisation, batch order and views "
              "and its own --shots / --train-fraction subset (what a seed varies in a run of its own); seeds that draw "
              "different val/test clips (a cache without splits) or several processes train one run after another.")  # fmt: skip
@verbosity_options
def train_probe_command(cache: Path, probe: str, out: Path, option_pairs, temporal_pe, cls, block, sweep_specs,
                        seeds, compile_, **kwargs) -> None:  # fmt: skip
    """Train a probe on cached tokens; keep the best-on-val checkpoint, report test metrics."""
    probe_class(probe)  # an unknown probe is refused before anything else
    switches = {"temporal_pe": temporal_pe, "cls": cls, "block": block}
    options = probe_option_values(probe, option_pairs, switches)
    if kwargs["batch_size"] is None:
        kwargs["batch_size"] = default_batch_size(kwargs["device"])
    cfg = TrainConfig(cache=cache, probe=probe, out=out, probe_options=options, compile=compile_, **kwargs)
    sweep = parse_sweep(sweep_specs)
    checks.check_sweep_values(probe, sweep)
    if seeds is None:
        train_probe(cfg, sweep=sweep)
        return
    summary = train_seeds(cfg, parse_seeds(seeds), sweep=sweep)
    click.echo(seeds_markdown(summary))
