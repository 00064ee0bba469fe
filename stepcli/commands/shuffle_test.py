"""``stepcli shuffle-test``: does a trained probe use frame order? (DESIGN §6)"""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.extract.datasets.pairs import read_pairs
from stepcli.probe.report import plot_shuffle, shuffle_markdown
from stepcli.probe.run import load_run
from stepcli.probe.shuffle import RESULTS, ShuffleConfig, shuffle_test

PathArg = click.Path(path_type=Path)


@click.command("shuffle-test")
@click.option("--run", "run_dir", required=True, type=PathArg, help="Run directory made by `stepcli train-probe`.")
@click.option("--cache", type=PathArg, help="Feature cache [the one the run was trained on].")
@click.option("--permutations", type=int, default=20, show_default=True, help="Seeded random frame orders (K).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the permutations.")
@click.option(
    "--pairs", "pairs_file", type=PathArg, help="Nearly-symmetric pairs, 'class a,class b' per line [cache's]."
)
@click.option("--out", type=PathArg, help="Output directory [RUN/shuffle].")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Clips per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def shuffle_test_command(run_dir, cache, permutations, seed, pairs_file, out, batch_size, device) -> None:
    """Evaluate a run's test clips with frames in original, reversed and K shuffled orders.

    Reports accuracy per order, the prediction flip rate against the original order, per-class
    changes and accuracy on nearly-symmetric pairs; writes results.json and a PNG bar chart. It
    reads cached tokens only and never runs the backbone.
    """
    run = load_run(run_dir)
    features = FeatureCache(cache if cache is not None else run.cache_path)
    pairs = read_pairs(pairs_file, features.class_names) if pairs_file is not None else None
    cfg = ShuffleConfig(permutations=permutations, seed=seed, batch_size=batch_size, device=resolve_device(device).type)
    result = shuffle_test(run, features, cfg, pairs=pairs, pairs_source=str(pairs_file) if pairs_file else None)
    out = Path(out) if out is not None else Path(run_dir) / "shuffle"
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    chart = plot_shuffle(result, out / "shuffle.png")
    click.echo(shuffle_markdown(result))
    click.echo(f"results: {out / RESULTS}\nchart:   {chart}", err=True)
