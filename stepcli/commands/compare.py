"""``stepcli compare``: every probe on one cache, shuffle-tested, in one table with plots."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli.probe.compare import CompareConfig, all_probes, run_compare
from stepcli.probe.train import TrainConfig

PathArg = click.Path(path_type=Path)


def print_comparison(comparison, out: Path) -> None:
    """The table on stdout, where it was written and the plots on stderr."""
    click.echo(comparison.markdown)
    written = [*comparison.tables.values(), *comparison.plots.values()]
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in written) + f"\nruns: {out / 'runs'}", err=True)


@click.command("compare")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--out", required=True, type=PathArg, help="Directory for runs, tables and plots (rerun to resume).")
@click.option("--probes", help=f"Comma-separated probes [all: {','.join(all_probes())}].")
@click.option("--epochs", type=int, help=f"Epochs per gradient-trained probe [{TrainConfig.epochs}].")
@click.option("--lr", type=float, help=f"Peak learning rate [{TrainConfig.lr}].")
@click.option("--batch-size", type=int, help=f"Clips per step [{TrainConfig.batch_size}].")
@click.option("--permutations", type=int, default=20, show_default=True, help="Shuffled frame orders per probe (K).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for training and permutations.")
@click.option(
    "--pairs", "pairs_file", type=PathArg, help="Nearly-symmetric pairs, 'class a,class b' per line [cache's]."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress output.")
def compare_command(cache, out, probes, **kwargs) -> None:
    """Train the probes on one cache, shuffle-test each, write one comparison table and plots."""
    names = [p.strip() for p in probes.split(",") if p.strip()] if probes else all_probes()
    comparison = run_compare(CompareConfig(cache=cache, out=out, probes=names, **kwargs))
    print_comparison(comparison, out)
