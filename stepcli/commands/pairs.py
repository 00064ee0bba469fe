"""``stepcli pairs``: the built-in nearly-symmetric class pairs of a dataset, or pairs mined from a run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepcli.commands.common import PathArg, default_of, verbosity_options
from stepcli.errors import StepcliError
from stepcli.extract.datasets import dataset_names
from stepcli.extract.datasets.csv_list import read_class_list
from stepcli.extract.datasets.pairs import OFFICIAL_CLASSES, known_pairs, table
from stepcli.outputs import quoted
from stepcli.probe.studies.pair_mining import MINING_SPLITS, MiningConfig, mine_pairs


@click.command("pairs")
@click.option("--dataset", type=click.Choice(dataset_names()), help="Dataset adapter: print its built-in pairs.")
@click.option("--from-run", "run_dir", type=PathArg,
              help="Mine candidate pairs from a trained order-aware run (STEP): where reversing each clip of --split "
              "sends it.")  # fmt: skip
@click.option("--split", type=click.Choice(MINING_SPLITS), default=default_of(MiningConfig, "split"), show_default=True,
              help="--from-run: the run's clips to mine on; val keeps test for scoring the pairs afterwards.")  # fmt: skip
@click.option("--cache", type=PathArg, help="--from-run: the run's feature cache [where the run was trained].")
@click.option("--out", type=PathArg, help="--from-run: directory for pairs.txt, pairs.json, pairs.png [RUN/pairs].")
@click.option("--top", type=click.IntRange(1, 1_000_000), default=default_of(MiningConfig, "top"), show_default=True,
              help="--from-run: pairs written to pairs.txt.")  # fmt: skip
@click.option(
    "--classes",
    type=PathArg,
    help="Class list, one name per line: only the pairs whose two classes are in it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of pairs.")
@verbosity_options
def pairs_command(dataset: str | None, run_dir: Path | None, cache: Path | None, out: Path | None, split: str,
                  top: int, classes: Path | None, as_json: bool) -> None:  # fmt: skip
    """Print a dataset's nearly-symmetric class pairs, one 'class a,class b' per line, or (--from-run)
    rank candidate pairs from where a trained order-aware run sends time-reversed clips (its val split by default).

    This is the format `stepcli extract --pairs FILE` (and --pairs elsewhere) reads: save it, edit it, pass it back.
    Built-in pairs naming a class outside the class list (the --classes file, else the dataset's own list where
    stepcli knows it) are left out with a warning that names the class.
    """
    if (dataset is None) == (run_dir is None):
        raise StepcliError("give --dataset NAME (built-in pairs) or --from-run RUN (mined pairs), one of them")
    if run_dir is None and (cache is not None or out is not None):
        raise StepcliError("--cache and --out go with --from-run; --dataset only prints the built-in pairs")
    if run_dir is not None:
        _mined(run_dir, cache, out, MiningConfig(top=top, split=split), as_json)
        return
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


def _mined(run_dir: Path, cache: Path | None, out: Path | None, cfg: MiningConfig, as_json: bool) -> None:
    candidates, paths, reversal = mine_pairs(run_dir, out, cfg, cache)
    click.echo(f"mined on the run's {reversal.split} split: {reversal.clips} clips, {reversal.changed} change class "
               f"when reversed, {reversal.moved} of them right in the original order", err=True)  # fmt: skip
    for c in candidates:  # the counts on stderr, so that stdout stays a --pairs file
        click.echo(f"{c.score:6.1%}  {c.a} -> {c.b}: {c.a_to_b}/{c.clips_a} clips, {c.b} -> {c.a}: "
                   f"{c.b_to_a}/{c.clips_b} clips", err=True)  # fmt: skip
    if as_json:
        click.echo(json.dumps([[c.a, c.b] for c in candidates], indent=1))
    else:
        click.echo("".join(f"{c.a},{c.b}\n" for c in candidates), nl=False)
    if reversal.order_blind:
        click.echo(f"no pairs: run {quoted(run_dir)} is order-blind (no {reversal.split} clip changes class when its "
                   "frames are reversed); mine from an order-aware run, e.g. --probe step", err=True)  # fmt: skip
    elif not candidates:
        click.echo(f"no pairs: no {reversal.split} clip predicted right changes class when reversed", err=True)
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
