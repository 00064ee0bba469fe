"""``stepcli demo``: the whole experiment from nothing — generate, extract, compare, report.

It is `stepcli extract --dataset demo --out DIR/cache` followed by `stepcli compare --cache
DIR/cache --out DIR/compare`, so every step can be rerun by hand. Rerunning the demo resumes:
cached clips and finished probe runs are reused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from stepcli.commands.compare import print_comparison
from stepcli.extract.datasets import DatasetOptions
from stepcli.extract.datasets.demo import DEFAULT_CLIPS_PER_CLASS
from stepcli.extract.pipeline import ExtractConfig, run_extract
from stepcli.probe.compare import CompareConfig, run_compare
from stepcli.probe.train import TrainConfig

PathArg = click.Path(path_type=Path)
# --quick: a smoke test of every step in a minute or two; its numbers mean nothing
QUICK = {"size": 4, "epochs": 1, "permutations": 5}
PERMUTATIONS = 10  # the demo's default: half of compare's 20 keeps the big probes' shuffle tests short


@click.command("demo")
@click.option("--out", type=PathArg, default=Path("stepcli-demo"), show_default=True, help="Output directory.")
@click.option("--size", type=int, help=f"Demo clips per class [{DEFAULT_CLIPS_PER_CLASS}; --quick: 4].")
@click.option("--epochs", type=int, help=f"Epochs per probe [{TrainConfig.epochs}; --quick: 1].")
@click.option("--permutations", type=int, help="Shuffled frame orders per probe [10; --quick: 5].")
@click.option("--quick", is_flag=True, help="Tiny dataset, 1 epoch: checks the pipeline, numbers mean nothing.")
@click.option("--backbone", default=ExtractConfig.backbone, hidden=True)
@click.option("--image-size", type=int, default=ExtractConfig.image_size, hidden=True)
@click.option("--workers", type=int, default=ExtractConfig.workers, hidden=True)
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo_command(out, size, epochs, permutations, quick, backbone, image_size, workers, quiet) -> None:
    """Generate the demo videos, extract them, compare every probe; print the table and plots.

    The demo's classes come in pairs that are exact time-reversals of each other (brighten /
    dim, open / close, ...): one frame tells the pair, only the frame order tells the class.
    """
    start = time.monotonic()
    defaults = QUICK if quick else {}
    size = size if size is not None else defaults.get("size")
    cache = out / "cache"
    say = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    say(f"demo 1/2: generating and extracting the demo dataset into {cache}")
    options = DatasetOptions(root=cache / "videos", size=size)
    config = ExtractConfig(
        dataset="demo", out=cache, dataset_options=options, backbone=backbone, image_size=image_size,
        workers=workers, quiet=quiet,
    )  # fmt: skip
    summary = run_extract(config)
    say(f"extracted {summary.extracted} clips, {summary.skipped} already cached, {summary.failed} failed")
    if summary.failed:
        say(f"warning: {summary.failed} clips failed to extract (see {cache / 'failures.jsonl'}); comparing the rest")
    say(f"demo 2/2: training and shuffle-testing every probe into {out / 'compare'}")
    compare = CompareConfig(
        cache=cache, out=out / "compare", quiet=quiet,
        epochs=epochs if epochs is not None else defaults.get("epochs"),
        permutations=permutations if permutations is not None else defaults.get("permutations", PERMUTATIONS),
    )  # fmt: skip
    comparison = run_compare(compare)
    print_comparison(comparison, out / "compare")
    click.echo(f"demo finished in {time.monotonic() - start:.0f} s; table: {comparison.tables['md']}", err=True)
    sys.exit(1 if summary.failed else 0)
