"""Walk every open_clip model and one model of every timm family: each builds tokens or is refused
in one line, never a traceback.

    python bench/backbones.py [--image-size 224] [--only openclip|timm] [-v]

Each model is built on the meta device (no weights, no compute: shapes only; at 64 px for real where
its code needs numbers, e.g. `.item()`), through the same
`load_backbone` extraction uses, and read at its last block. Prints one line per refusal (and per
model with -v), then the counts; exits 1 if anything raised something other than a StepcliError.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
import warnings

from stepcli.errors import StepcliError
from stepcli.extract.encoders import load_backbone

SMALL = 64  # px, for a model built for real
# timm families with no model beside those picked by module (or worth naming): the issue's own
TIMM_EXTRA = [
    "vit_small_patch14_reg4_dinov2", "vit_small_patch16_dinov3", "vit_base_patch16_siglip_224",
    "eva02_base_patch14_224", "resnet50", "convnext_tiny", "efficientnet_b0", "mobilenetv2_100",
    "mobilenetv3_large_100", "regnety_002", "swin_tiny_patch4_window7_224", "deit_small_distilled_patch16_224",
]  # fmt: skip


def openclip_names() -> list[str]:
    import open_clip

    return [f"openclip:{name}" for name in open_clip.list_models()]


def timm_names() -> list[str]:
    """The first model of every timm module (one per family), and the named ones."""
    import timm

    picked = []
    for module in timm.list_modules():
        names = timm.list_models(module=module)
        if names:
            picked.append(names[0])
    return [f"timm:{name}" for name in dict.fromkeys(picked + TIMM_EXTRA)]


def _build(spec: str, image_size: int):
    """On the meta device; a model whose code needs real numbers (`.item()`) is built for real, small."""
    try:
        return load_backbone(spec, image_size, meta=True)
    except StepcliError as err:
        if "meta" not in str(err):
            raise
    return load_backbone(spec, SMALL)


def walk(specs: list[str], image_size: int, verbose: bool) -> tuple[int, int, list[str]]:
    supported, refused, crashed = 0, 0, []
    for spec in specs:
        start = time.perf_counter()
        try:
            encoder = _build(spec, image_size)
        except StepcliError as err:
            refused += 1
            print(f"refused   {spec}: {err}")
            continue
        except Exception:  # noqa: BLE001 - what this walk exists to find
            crashed.append(spec)
            print(f"TRACEBACK {spec}\n{traceback.format_exc()}")
            continue
        supported += 1
        if verbose:
            print(
                f"ok        {spec}: P={encoder.num_prefix} ({encoder.prefix[0]}) grid {encoder.grid} D={encoder.dim} "
                f"depth {encoder.depth} ({time.perf_counter() - start:.1f} s)"
            )
    return supported, refused, crashed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--only", choices=["openclip", "timm"])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # open_clip and timm narrate every build
    warnings.filterwarnings("ignore")
    families = {"openclip": openclip_names, "timm": timm_names}
    failed = False
    for name, names in families.items():
        if args.only and name != args.only:
            continue
        specs = names()
        supported, refused, crashed = walk(specs, args.image_size, args.verbose)
        print(f"{name}: {len(specs)} models, {supported} build tokens, {refused} refused in one line, "
              f"{len(crashed)} tracebacks{': ' + ', '.join(crashed) if crashed else ''}")  # fmt: skip
        failed |= bool(crashed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
