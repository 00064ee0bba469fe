"""``stepcli frames``: which frames decide, for every probe of a comparison."""

from __future__ import annotations

import click

from stepcli.commands.common import PathArg, device_option, verbosity_options
from stepcli.probe.studies.frames import run_frames
from stepcli.probe.studies.shuffle import ShuffleConfig


@click.command("frames")
@click.option("--compare", "compare_dir", required=True, type=PathArg, help="Output directory of `stepcli compare`.")
@click.option("--cache", type=PathArg, help="Feature cache [the comparison's].")
@click.option("--out", type=PathArg, help="Directory for the tables and plots [COMPARE/frames].")
@device_option(ShuffleConfig)
@verbosity_options
def frames_command(compare_dir, cache, out, device) -> None:
    """Per probe: test accuracy with frame t replaced by a copy of frame t-1, for every t; for probes
    with one readout token (STEP's global CLS), its attention per frame averaged per class.

    Reads cached tokens only; writes frames.md/.json, frame_drop.png, attention_*.png to --out.
    """
    paths = run_frames(compare_dir, cache=cache, device=device, out=out)
    click.echo(paths["md"].read_text())
    click.echo("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()), err=True)
