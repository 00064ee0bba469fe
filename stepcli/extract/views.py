"""The views cached per clip: temporal clips x spatial crops for every split, augmented train views.

The multi-view test of V-JEPA and SlowFast averages a clip's predictions over N temporal clips x 3
spatial crops (left, centre, right along the long side); training from frozen features can only
be augmented if augmented views were cached (facebookresearch/jepa #24). Augmented views are
seeded random resized crops, the same box for every frame of a view, drawn per clip from the
clip id and the seed, so every process and every rerun draws the same boxes. There is no
horizontal flip: a flip turns "moving left" into "moving right".
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from stepcli.cache.records import ViewsRecord
from stepcli.errors import StepcliError
from stepcli.extract.preprocess import Preprocess

#: crop positions along the long side per `--crops` (0: left or top, 0.5: centre, 1: right or bottom)
CROP_POSITIONS = {1: (0.5,), 3: (0.0, 0.5, 1.0)}
#: `--augment NAME[:min_scale]` -> the default smallest area fraction of a random resized crop
AUGMENTS = {"rrc": 0.3}
RATIO = (3 / 4, 4 / 3)  # aspect ratios of a random resized crop, as in torchvision and V-JEPA


def views_record(clips: int, crops: int, train_views: int, augment: str | None, seed: int) -> ViewsRecord:
    """Check the view options and normalise `augment` to `name:min_scale`; problems are one-line errors."""
    if clips < 1:
        raise StepcliError(f"--clips must be >= 1, got {clips}")
    if crops not in CROP_POSITIONS:
        raise StepcliError(f"--crops must be one of {', '.join(map(str, CROP_POSITIONS))}, got {crops}")
    if train_views < 0:
        raise StepcliError(f"--train-views must be >= 0, got {train_views}")
    if train_views and not augment:
        raise StepcliError(f"--train-views {train_views} needs --augment ({', '.join(AUGMENTS)}[:min_scale])")
    if augment and not train_views:
        raise StepcliError(f"--augment {augment} needs --train-views K (augmented views per train clip)")
    return ViewsRecord(clips, crops, train_views, _parse_augment(augment) if augment else "", seed if augment else 0)


def _parse_augment(augment: str) -> str:
    name, _, scale = augment.partition(":")
    if name not in AUGMENTS:
        raise StepcliError(f"--augment {augment!r}: known augmentations: {', '.join(AUGMENTS)} (e.g. rrc:0.3)")
    try:
        min_scale = float(scale) if scale else AUGMENTS[name]
    except ValueError:
        min_scale = -1.0
    if not 0 < min_scale <= 1:
        raise StepcliError(f"--augment {augment!r}: min_scale must be a number in (0, 1]")
    return f"{name}:{min_scale:g}"


def crop_box(rng: np.random.Generator, height: int, width: int, min_scale: float) -> tuple[int, int, int, int]:
    """A random resized crop `(top, left, h, w)`: area fraction in [min_scale, 1], ratio in RATIO."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    side = min(height, width)  # the fallback: the central square
    return (height - side) // 2, (width - side) // 2, side, side


def clip_views(
    frames: np.ndarray, views: ViewsRecord, preprocess: Preprocess, split: str, clip_id: str
) -> torch.Tensor:
    """Frames `[N*T, H, W, 3]` of N temporal clips -> the clip's views `[K, T, 3, S, S]` (see ViewsRecord)."""
    per_clip = np.split(frames, views.clips)
    out = [preprocess(clip, position) for clip in per_clip for position in CROP_POSITIONS[views.crops]]
    if split == "train" and views.train_views:
        min_scale = float(views.augment.partition(":")[2])
        rng = np.random.default_rng([views.seed, zlib.crc32(clip_id.encode())])
        height, width = frames.shape[1:3]
        for j in range(views.train_views):
            out.append(preprocess.resized_crop(per_clip[j % views.clips], crop_box(rng, height, width, min_scale)))
    return torch.stack(out)
