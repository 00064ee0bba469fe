"""``stepcli evaluate``: a trained run scored on another cache with the same extraction."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepcli.commands import checks
from stepcli.commands.common import (
    PathArg,
    default_of,
    device_option,
    permutations_option,
    seed_option,
    verbosity_options,
)
from stepcli.probe.studies.cross_cache import EVAL_SPLITS, EvaluateConfig, evaluate_run


@click.command("evaluate")
@click.option("--run", "run_dir", required=True, type=PathArg, help="Run directory made by `stepcli train-probe`.")
@click.option("--cache", required=True, type=PathArg, help="Cache to score on, extracted with the run's settings.")
@click.option("--split", type=click.Choice(EVAL_SPLITS), default=default_of(EvaluateConfig, "split"),
              show_default=True, help="test: the run's test clips on its own cache, else the cache's test split.")  # fmt: skip
@click.option("--out", required=True, type=PathArg, help="New directory for metrics.json and evaluation.json.")
@click.option("--shuffle", is_flag=True, help="Also shuffle-test the run on these clips (OUT/shuffle).")
@permutations_option(EvaluateConfig)
@seed_option(EvaluateConfig, "Seed of the permutations.")
@click.option("--batch-size", type=checks.BATCH, default=default_of(EvaluateConfig, "batch_size"), show_default=True,
              help="Clips per forward pass.")  # fmt: skip
@device_option(EvaluateConfig)
@verbosity_options
def evaluate_command(run_dir: Path, cache: Path, out: Path, **kwargs) -> None:
    """Evaluate a trained run on another cache (e.g. another camera view); classes are matched by name.

    A cache extracted with other settings (backbone, weights, frames, layer, size) is refused,
    naming the differing keys.
    """
    paths = evaluate_run(run_dir, cache, out, EvaluateConfig(**kwargs))
    metrics = json.loads(paths["metrics"].read_text())
    low, high = metrics["ci95"]["top1"]
    click.echo(f"top-1 {metrics['top1']:.4f} (95% CI {low:.4f}-{high:.4f}), mean per-class "
               f"{metrics['mean_class_accuracy']:.4f} on {metrics['num_clips']} clips")  # fmt: skip
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
