"""The valid range of every option, checked by click before a command does any work.

A value outside its range is click's one-line usage error (exit 2, see `cli.py`) naming the
option, the value and the range, so that a typo never starts an extraction, never trains to
chance and never ends in a traceback. Ranges are generous: they keep out what cannot work (zero
frames, a negative learning rate, nan) and what would exhaust the machine by accident (a million
workers), nothing a real experiment needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.extract.encoders import load_backbone
from stepcli.probe.models import PROBES, probe_class, probe_options

SEED = click.IntRange(0, 2**32 - 1)  # what numpy and torch both take
LAYER = click.IntRange(-1000, 999)  # and inside the backbone's depth: `check_backbone`
WORKERS = click.IntRange(0, 256)
BATCH = click.IntRange(1, 1_000_000)
EPOCHS = click.IntRange(1, 100_000)
PERMUTATIONS = click.IntRange(1, 100_000)
FRAMES = click.IntRange(1, 1024)
IMAGE_SIZE = click.IntRange(1, 4096)  # and one the backbone can encode: `check_backbone`
CLIPS_PER_CLASS = click.IntRange(1, 1_000_000)
DEMO_CLIPS_PER_CLASS = click.IntRange(4, 1_000_000)  # fewer leaves the demo without val or test clips


class Finite(click.FloatRange):
    """A float in a range that is also finite: click's FloatRange lets nan and inf through."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number (range {self._describe_range()})", param, ctx)
        return super().convert(number, param, ctx)


LR = Finite(0, 10, min_open=True)  # AdamW beyond 10 only diverges
POSITIVE = Finite(0, min_open=True)  # a clipping threshold
NON_NEGATIVE = Finite(0)  # weight decay, warmup epochs
STALL = Finite(0, 7 * 24 * 3600)  # seconds


class NonEmptyPath(click.Path):
    """A path that is not '' (which pathlib reads as '.', the current directory) and holds no NUL."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or directory name", param, ctx)
        if isinstance(value, str) and "\0" in value:
            self.fail(f"{value!r} holds a NUL byte, which no path can", param, ctx)
        return super().convert(value, param, ctx)


PathArg = NonEmptyPath(path_type=Path)


def check_rank(rank: int | None, world_size: int | None) -> None:
    """`--rank R --world-size W` needs 0 <= R < W."""
    if rank is not None and world_size is not None and rank >= world_size:
        raise click.BadParameter(f"{rank} is not below --world-size {world_size} (range 0<=x<{world_size})",
                                 param_hint="'--rank'")  # fmt: skip


def check_device(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--device cuda` needs a GPU now, not after the cache directory is made."""
    try:
        resolve_device(value)
    except StepcliError as err:
        raise click.BadParameter(str(err).removeprefix(f"--device {value} "), param=param) from None
    return value


def check_sweep_values(probe: str, sweep: dict[str, list]) -> None:
    """Each `--sweep KEY=V1,V2` value in the range of KEY's own option (the keys are checked later)."""
    ranges = {"lr": LR, "weight_decay": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE, "clip_grad": POSITIVE}
    options = probe_options(probe) if probe in PROBES else {}
    for key, values in sweep.items():
        for value in values:
            if key in ranges:
                number = value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
                try:
                    ranges[key].convert(number, None, None)
                except click.BadParameter as err:
                    raise click.BadParameter(err.message, param_hint=f"'--sweep {key}'") from None
            elif key in options:
                check_probe_value(probe, key, value, options[key], "--sweep")


def check_probe_value(probe: str, key: str, value: Any, default: Any, flag: str = "--option") -> None:
    """A `--option KEY=VALUE` of the type of the probe's default, and in range: counts and
    ratios positive and finite, switches true or false, names one of the probe's choices."""
    choices = probe_class(probe).choices
    expected = int if default is None else type(default)  # None: num_heads, picked from the token width
    if value is None and default is None:
        return
    if expected is bool:
        ok = isinstance(value, bool)
        want = "true or false"
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096
        want = "an integer in 1..4096"
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and 0 < value <= 1e6
        want = "a finite number in (0, 1e6]"
    else:
        ok = value in choices.get(key, (value,)) and isinstance(value, str)
        want = "one of " + ", ".join(choices.get(key, ("a name",)))
    if not ok:
        none = " or none" if default is None else ""
        raise StepcliError(f"{flag} {key}={value!r}: probe '{probe}' needs {want}{none}")


def check_backbone(backbone: str, image_size: int, layers: tuple[int, ...]) -> None:
    """The backbone built on the meta device (no weights read, no compute): an unknown family or
    model, a missing weights file, an image smaller than a patch or a block outside the model's
    depth is refused here, in the encoder registry's own words, before any work."""
    load_backbone(backbone, image_size, layers, meta=True)
