"""``stepcli verify``: is every shard of a cache whole, consistent with its manifest and finite?"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stepcli.cache.verify import verify_cache
from stepcli.commands.common import PathArg, verbosity_options


@click.command("verify")
@click.argument("cache", type=PathArg)
@verbosity_options
def verify_command(cache: Path) -> None:
    """Check a cache: shards open, clip ids blank-free and unique, shapes and dtypes as the manifest
    says, labels and splits valid, every token finite. One line per problem; exit 1 if any."""
    report = verify_cache(cache)
    for line in report.problems:
        click.echo(line)
    click.echo(report.summary())
    sys.exit(0 if report.ok else 1)
