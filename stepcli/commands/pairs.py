"""``stepcli pairs``: the built-in nearly-symmetric class pairs of a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepcli.commands.common import PathArg, verbosity_options
from stepcli.extract.datasets import dataset_names
from stepcli.extract.datasets.csv_list import read_class_list
from stepcli.extract.datasets.pairs import OFFICIAL_CLASSES, known_pairs, table


@click.command("pairs")
@click.option("--dataset", required=True, type=click.Choice(dataset_names()), help="Dataset adapter.")
@click.option(
    "--classes",
    type=PathArg,
    help="Class list, one name per line: only the pairs whose two classes are in it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of pairs.")
@verbosity_options
def pairs_command(dataset: str, classes: Path | None, as_json: bool) -> None:
    """Print a dataset's nearly-symmetric class pairs, one 'class a,class b' per line.

    This is the format `stepcli extract --pairs FILE` reads: save it, edit it, pass it back.
    Pairs naming a class outside the class list (the --classes file, else the dataset's own list
    where stepcli knows it) are left out with a warning that names the class.
    """
    if classes is not None:
        pairs = known_pairs(dataset, read_class_list(classes))
    elif dataset in OFFICIAL_CLASSES:
        pairs = known_pairs(dataset, OFFICIAL_CLASSES[dataset])
    else:
        pairs = table(dataset)
    if as_json:
        click.echo(json.dumps([list(p) for p in pairs], indent=1))
        return
    if not pairs:
        click.echo(f"no built-in pairs for {dataset}; write a --pairs file for stepcli extract", err=True)
    for a, b in pairs:
        click.echo(f"{a},{b}")
