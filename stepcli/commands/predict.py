"""``stepcli predict``: top-k classes of new videos with a trained probe."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from stepcli.probe.predict import predict_videos
from stepcli.probe.run import load_run


@click.command("predict")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="A train-probe run.")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict_command(run_dir: Path, videos: tuple[Path, ...], top_k: int, device: str, as_json: bool) -> None:
    """Decode VIDEOS, run the backbone of the run's cache and the probe, print the top-k classes."""
    predictions = predict_videos(load_run(run_dir), list(videos), top_k=top_k, device=device)
    if as_json:
        click.echo(json.dumps([asdict(p) for p in predictions], indent=2))
        return
    for p in predictions:
        click.echo(p.video)
        for name, prob in p.top:
            click.echo(f"  {prob:6.1%}  {name}")
