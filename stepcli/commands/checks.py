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

from stepcli import StepcliError

SEED = click.IntRange(0, 2**32 - 1)  # what numpy and torch both take
LAYER = click.IntRange(-1000, 999)  # and inside the backbone's depth: `check_layers`
WORKERS = click.IntRange(0, 256)
BATCH = click.IntRange(1, 1_000_000)
EPOCHS = click.IntRange(1, 100_000)
PERMUTATIONS = click.IntRange(1, 100_000)
FRAMES = click.IntRange(1, 1024)
IMAGE_SIZE = click.IntRange(1, 4096)  # and at least the backbone's patch size: `check_image_size`
CLIPS_PER_CLASS = click.IntRange(1, 1_000_000)


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
BACKBONE_FAMILIES = ("openclip", "timm")  # what extract/backbones.py loads


def check_rank(rank: int | None, world_size: int | None) -> None:
    """`--rank R --world-size W` needs 0 <= R < W."""
    if rank is not None and world_size is not None and rank >= world_size:
        raise click.BadParameter(f"{rank} is not below --world-size {world_size} (range 0<=x<{world_size})",
                                 param_hint="'--rank'")  # fmt: skip


def check_backbone(backbone: str) -> None:
    """`--backbone` names a model open_clip or timm knows, and an existing weights file if it names
    one: a typo is refused before the dataset is read (the demo's videos generated)."""
    family, _, rest = backbone.partition(":")
    name, _, weights = rest.partition(":")
    if family not in BACKBONE_FAMILIES or not name:
        raise click.BadParameter(f"{backbone!r} is not openclip:<model>[:<tag or file>] or timm:<model>[:<file>]",
                                 param_hint="'--backbone'")  # fmt: skip
    if family == "openclip":
        import open_clip

        known = name in open_clip.list_models()
    else:
        import timm

        known = timm.is_model(name)
    if not known:
        raise click.BadParameter(f"{family} has no model {name!r}", param_hint="'--backbone'")
    looks_like_file = "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))
    if looks_like_file and not Path(weights).expanduser().is_file():
        raise click.BadParameter(f"{backbone!r}: no weights file {weights}", param_hint="'--backbone'")


def check_image_size(backbone: str, image_size: int) -> None:
    """`--image-size` at least the backbone's patch size, read from its config without loading weights."""
    patch, _ = backbone_shape(backbone)
    if patch is not None and image_size < patch:
        raise click.BadParameter(
            f"{image_size} is smaller than one {patch}x{patch} patch of {backbone} (range {patch}<=x<=4096)",
            param_hint="'--image-size'",
        )


def check_layers(backbone: str, layers: tuple[int, ...], option: str) -> None:
    """Each block of `--layer`/`--layers` inside the backbone's depth, and none named twice."""
    _, depth = backbone_shape(backbone)
    if depth is None:
        return
    for layer in layers:
        if not -depth <= layer < depth:
            raise click.BadParameter(f"{layer} is outside the {depth} blocks of {backbone} (range -{depth}<=x<={depth - 1})",
                                     param_hint=f"'{option}'")  # fmt: skip
    if len({n % depth for n in layers}) != len(layers):
        raise click.BadParameter(f"{','.join(map(str, layers))} names a block twice", param_hint=f"'{option}'")


def backbone_shape(backbone: str) -> tuple[int | None, int | None]:
    """(patch size, blocks) of an open_clip or timm ViT named in `backbone`, from its config or a
    weightless model on the meta device; None where unknown (the loader checks at load)."""
    family, _, rest = backbone.partition(":")
    name = rest.split(":", 1)[0]
    try:
        if family == "openclip":
            import open_clip

            vision = (open_clip.get_model_config(name) or {}).get("vision_cfg") or {}
            patch, depth = vision.get("patch_size"), vision.get("layers")
        elif family == "timm":
            import timm
            import torch

            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
            depth = len(model.blocks) if hasattr(model, "blocks") else None
        else:
            return None, None
    except Exception:  # an unknown model: the loader says so in its own words
        return None, None
    if isinstance(patch, tuple | list):
        patch = max(patch)
    return (int(patch) if isinstance(patch, int) and patch > 0 else None), (depth if isinstance(depth, int) else None)


def check_device(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--device cuda` needs a GPU now, not after the cache directory is made."""
    from stepcli.device import resolve_device

    try:
        resolve_device(value)
    except StepcliError as err:
        raise click.BadParameter(str(err).removeprefix(f"--device {value} "), param=param) from None
    return value


def check_sweep_values(probe: str, sweep: dict[str, list]) -> None:
    """Each `--sweep KEY=V1,V2` value in the range of KEY's own option (the keys are checked later)."""
    from stepcli.probe.models import PROBES, probe_options

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
    from stepcli.probe.models.linear import POOLS
    from stepcli.probe.models.step import BLOCKS, CLS_MODES

    choices = {"cls": CLS_MODES, "block": tuple(BLOCKS), "pool": POOLS}
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
