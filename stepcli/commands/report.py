"""``stepcli report``: many comparisons in one table (Markdown, CSV, JSON, HTML)."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli.commands.common import PathArg, verbosity_options
from stepcli.probe.studies.gather import BY, gather


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=PathArg)
@click.option("--out", required=True, type=PathArg, help="Directory for report.md, .csv, .json and .html.")
@click.option("--by", type=click.Choice(BY), default=BY[0], show_default=True,
              help="What the rows are: probes (a column per study) or studies (a column per probe).")  # fmt: skip
@verbosity_options
def report_command(dirs: tuple[Path, ...], out: Path, by: str) -> None:
    """Gather `stepcli compare` outputs (DIRS: one per backbone, dataset, ...) into one table of test
    top-1 with 95% intervals; studies tested on different clips are refused."""
    gathered = gather(list(dirs), out, by)
    click.echo(gathered.markdown)
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in gathered.paths.values()), err=True)
