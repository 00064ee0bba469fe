"""``stepcli predict``: top-k classes of new videos with a trained probe."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from stepcli.commands.common import PathArg, default_of, device_option, verbosity_options
from stepcli.errors import StepcliError
from stepcli.probe.evaluation.predict import PredictConfig, predict_run


@click.command("predict")
@click.option("--run", "run_dir", required=True, type=PathArg, help="A train-probe run.")
@click.argument("videos", nargs=-1, required=True, type=PathArg)
@click.option(
    "--top-k",
    type=click.IntRange(1, 1_000_000),
    default=default_of(PredictConfig, "top_k"),
    show_default=True,
    help="Classes printed per video, most probable first (at most the run's classes).",
)
@device_option(PredictConfig)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@verbosity_options
def predict_command(run_dir: Path, videos: tuple[Path, ...], top_k: int, device: str, as_json: bool) -> None:
    """Decode VIDEOS, run the backbone of the run's cache and the probe, print the top-k classes."""
    predictions = predict_run(run_dir, list(videos), PredictConfig(top_k=top_k, device=device))
    good = [p for p in predictions if p.error is None]
    if as_json:
        click.echo(json.dumps([asdict(p) for p in good], indent=2))
    else:
        for p in good:
            click.echo(p.video)
            for name, prob in p.top:
                click.echo(f"  {prob:6.1%}  {name}")
    bad = [p for p in predictions if p.error is not None]
    if bad:  # after the good ones: one unreadable file does not cost the others' predictions
        more = f" ({len(bad)} of {len(predictions)} videos could not be read; the others are above)"
        raise StepcliError(f"{bad[0].video}: {bad[0].error}{more}")
