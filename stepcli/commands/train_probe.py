"""``stepcli train-probe``: stage two, one probe trained from a feature cache into a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli import StepcliError
from stepcli.probe import PROBES
from stepcli.probe.logreg import LOGREG
from stepcli.probe.train import TrainConfig, train_probe

PathArg = click.Path(path_type=Path)
DEFAULTS = TrainConfig(cache=Path(), probe="", out=Path())
STEP_SWITCHES = {"temporal_pe": "--temporal-pe/--no-temporal-pe", "cls": "--cls", "block": "--block"}


def probe_names() -> list[str]:
    return [*PROBES, LOGREG]


@click.command("train-probe")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--probe", "probe_name", required=True, help=f"Probe: {', '.join(probe_names())}.")
@click.option("--out", required=True, type=PathArg, help="Run directory to write.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=float, default=DEFAULTS.weight_decay, show_default=True)
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True, help="Clips per step.")
@click.option("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--shots", type=int, help="Train on K clips per class (seeded, stratified).")
@click.option("--train-fraction", type=float, help="Train on this fraction of each class (seeded).")
@click.option(
    "--in-memory",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="Load the cache into RAM (auto: if it takes at most half the available memory) or stream from HDF5.",
)
@click.option("--temporal-pe/--no-temporal-pe", default=None, help="step: learnable frame-wise temporal encoding [on].")
@click.option("--cls", type=click.Choice(["global", "frame", "mean"]), help="step: what to classify from [global].")
@click.option("--block", type=click.Choice(["simplified", "no-ff", "standard"]), help="step: block type [simplified].")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train_probe_command(cache, probe_name, out, temporal_pe, cls, block, **kwargs) -> None:
    """Train a probe on cached tokens; keep the best-on-val checkpoint, report test metrics."""
    if probe_name not in probe_names():
        raise StepcliError(f"unknown probe '{probe_name}'; valid probes: {', '.join(probe_names())}")
    switches = {"temporal_pe": temporal_pe, "cls": cls, "block": block}
    switches = {k: v for k, v in switches.items() if v is not None}
    if switches and probe_name != "step":
        given = ", ".join(STEP_SWITCHES[k] for k in switches)
        raise StepcliError(f"{given} only apply to --probe step, not to --probe {probe_name}")
    train_probe(TrainConfig(cache=cache, probe=probe_name, out=out, probe_options=switches, **kwargs))
