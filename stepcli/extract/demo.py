"""Procedural nearly-symmetric actions: the demo dataset.

Every pair of classes is one motion and its exact time-reversal (brighten / dim, grow / shrink,
...). Each random draw of background, colours, sizes, speed and noise is rendered once
and written twice, forwards under one class and backwards under its partner, and both go to
the same split. So the *set* of frames never tells the direction: an order-blind probe can find
the pair but must guess within it, while an order-aware probe can be right every time.

A clip has ``num_frames * 3`` frames: segments of odd length make centre-of-segment sampling of
a clip and of its reversal pick the same frames in reverse order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepcli.cache.lock import waiting_lock
from stepcli.extract.video import write_video
from stepcli.files import write_atomic

FRAMES_PER_SEGMENT = 3
FPS = 24

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@dataclass
class DemoClip:
    clip_id: str
    path: str  # relative to the demo root
    label: str
    split: str


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random dark background: a tinted base with a gentle gradient at a random angle and a faint blob.

    Kept calm and dark on purpose, with bright objects: the demo must be learnable from a randomly
    initialised backbone, whose tokens entangle colour with shape and drown a small object in a
    busy background.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    base = rng.uniform(20, 70) + rng.uniform(-15, 15, 3)
    img = base + rng.uniform(-15, 15) * ramp[..., None]
    cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
    weight = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))[..., None] * rng.uniform(0.05, 0.2)
    return img * (1 - weight) + rng.uniform(0, 100, 3) * weight


def _bright(rng: np.random.Generator) -> np.ndarray:
    """A light colour with a random tint: objects stand out from the dark background."""
    return rng.uniform(170, 245) + rng.uniform(-10, 10, 3)


def _progress(rng: np.random.Generator, n: int) -> np.ndarray:
    """Motion progress 0..1 per frame; a random start, end and easing vary the speed."""
    t0, t1 = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
    t = np.clip((np.linspace(0, 1, n) - t0) / (t1 - t0), 0, 1)
    return t ** rng.uniform(0.7, 1.4)


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 1.0) -> None:
    m = mask[..., None].astype(np.float64) * alpha
    img *= 1 - m
    img += colour * m


Draw = Callable[[np.ndarray, float], None]


@dataclass(frozen=True)
class _Scene:
    """What every motion draws with: pixel coordinates, the object's centre, size and colours.

    Drawn once per clip by ``_render`` before any motion-specific draw, so all motions consume the
    random stream in the same order and each clip's shared draws do not depend on its motion.
    """

    xx: np.ndarray
    yy: np.ndarray
    cx: float
    cy: float
    scale: float
    colour: np.ndarray
    second: np.ndarray  # what is behind a door, a container's wall


def _brighten(rng: np.random.Generator, s: _Scene) -> Draw:
    """A lamp on a dimmer lights up a scene with a disc in it."""
    xx, yy, cx, cy, colour = s.xx, s.yy, s.cx, s.cy, s.colour
    light0, light1 = rng.uniform(0.15, 0.3), rng.uniform(0.9, 1.05)
    r = 0.16 * s.scale

    def draw(img: np.ndarray, q: float) -> None:
        _paint(img, (xx - cx) ** 2 + (yy - cy) ** 2 < r**2, colour)
        img *= light0 + (light1 - light0) * q

    return draw


def _grow(rng: np.random.Generator, s: _Scene) -> Draw:
    """A square swells from a speck to most of the frame."""
    xx, yy, cx, cy, colour = s.xx, s.yy, s.cx, s.cy, s.colour
    r0, r1 = rng.uniform(0.04, 0.08), rng.uniform(0.3, 0.4)

    def draw(img: np.ndarray, q: float) -> None:
        r = r0 + (r1 - r0) * q
        _paint(img, np.maximum(abs(xx - cx), abs(yy - cy)) < r, colour)

    return draw


def _appear(rng: np.random.Generator, s: _Scene) -> Draw:
    """A square fades in. Takes ``rng`` like every renderer, though it draws nothing of its own."""
    xx, yy, cx, cy, colour = s.xx, s.yy, s.cx, s.cy, s.colour
    half = 0.22 * s.scale

    def draw(img: np.ndarray, q: float) -> None:
        _paint(img, (abs(xx - cx) < half) & (abs(yy - cy) < half), colour, alpha=q)

    return draw


def _open(rng: np.random.Generator, s: _Scene) -> Draw:
    """Two doors slide apart and uncover what is behind them (``rng`` unused, as in ``_appear``)."""
    xx, yy, cx, cy, colour, second = s.xx, s.yy, s.cx, s.cy, s.colour, s.second
    half = 0.28 * s.scale

    def draw(img: np.ndarray, q: float) -> None:
        box = (abs(xx - cx) < half) & (abs(yy - cy) < half)
        _paint(img, box, second)
        gap = half * q
        doors = box & (abs(xx - cx) >= gap)
        _paint(img, doors, colour)

    return draw


def _rotate_clockwise(rng: np.random.Generator, s: _Scene) -> Draw:
    """A bar turns clockwise (image y points down), like a handle turned from level to upright."""
    xx, yy, cx, cy, colour = s.xx, s.yy, s.cx, s.cy, s.colour
    # Start near level and end near upright, as a door handle or a tap would turn. Were the start
    # angle uniform over the half-turn, start and end orientations would be distributed alike
    # for both directions and only a frame-to-frame comparison could tell them apart.
    a0, sweep = rng.uniform(-0.1, 0.1) * np.pi, rng.uniform(0.4, 0.6) * np.pi
    length, width = 0.35 * s.scale, 0.08 * s.scale

    def draw(img: np.ndarray, q: float) -> None:
        a = a0 + sweep * q
        along = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        across = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        _paint(img, (abs(along) < length) & (abs(across) < width), colour)

    return draw


def _fill(rng: np.random.Generator, s: _Scene) -> Draw:
    """A container's level rises (``rng`` unused, as in ``_appear``)."""
    xx, yy, cx, cy, colour, second = s.xx, s.yy, s.cx, s.cy, s.colour, s.second
    half_w, half_h = 0.22 * s.scale, 0.32 * s.scale

    def draw(img: np.ndarray, q: float) -> None:
        inside = (abs(xx - cx) < half_w) & (abs(yy - cy) < half_h)
        wall = (abs(xx - cx) < half_w + 0.025) & (abs(yy - cy) < half_h + 0.025) & ~inside
        _paint(img, wall, second)
        level = cy + half_h - 2 * half_h * q
        _paint(img, inside & (yy > level), colour)

    return draw


# (forward class, reversed class) -> the forward motion; the reversed class is the same frames
# played backwards. Every pair changes what the frames show (light, size, opacity, a gap, an
# angle, a level), not only where something is: offline, the demo runs a randomly initialised
# backbone, whose patch tokens barely encode position. A "move right / move left" pair was tried
# and stayed at chance for every probe, STEP included, even when trained on it alone.
RENDERERS: dict[tuple[str, str], Callable[[np.random.Generator, _Scene], Draw]] = {
    ("brighten", "dim"): _brighten,
    ("grow", "shrink"): _grow,
    ("appear", "disappear"): _appear,
    ("open", "close"): _open,
    ("rotate clockwise", "rotate counterclockwise"): _rotate_clockwise,
    ("fill", "empty"): _fill,
}
# The class order. A pair's index here seeds its random stream (see ``generate_demo``), so
# reordering changes which videos are drawn, but never which motion a class shows.
PAIRS: list[tuple[str, str]] = list(RENDERERS)


def _render(pair: tuple[str, str], rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Forward-direction frames ``[n, size, size, 3]`` uint8 of ``pair``'s motion.

    The shared draws come first, then the motion's own, then the per-frame noise: a fixed order
    keeps the videos of a given seed the same from one version to the next.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    background = _canvas(rng, size)
    colour = _bright(rng)
    second = colour * rng.uniform(0.45, 0.6)
    p = _progress(rng, n)
    scale = rng.uniform(0.85, 1.15)
    cx, cy = rng.uniform(0.4, 0.6, 2)
    noise = rng.uniform(1, 4)
    draw = RENDERERS[pair](rng, _Scene(xx, yy, cx, cy, scale, colour, second))

    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = background.copy()
        draw(img, p[i])
        img += rng.normal(0, noise, img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def twin_group(clip: DemoClip) -> str:
    """A clip's group: its draw, which it shares with its reversed twin (`<forward>|<backward>-<draw>`)."""
    pair = next(p for p in PAIRS if clip.label in p)
    return f"{pair[0]}|{pair[1]}-{clip.clip_id.rsplit('-', 1)[1]}"


def _split_of(index: int, draws: int) -> str:
    train_end = round(draws * SPLIT_FRACTIONS["train"])
    val_end = train_end + round(draws * SPLIT_FRACTIONS["val"])
    return "train" if index < train_end else "val" if index < val_end else "test"


def generate_demo(
    root: Path, clips_per_class: int = 20, num_frames: int = 8, seed: int = 0, size: int = 112
) -> list[DemoClip]:
    """Write the demo videos under ``root`` (skipped when the same demo is already there).

    Generation holds a lock on the folder: a second process generating the same demo into it
    waits, then reuses the videos, instead of writing the same files at the same time.
    """
    root = Path(root)
    with waiting_lock(root / ".demo.lock"):
        index_path = root / "demo.json"
        params = {"clips_per_class": clips_per_class, "num_frames": num_frames, "seed": seed, "size": size}
        if index_path.is_file():
            saved = json.loads(index_path.read_text())
            if saved["params"] == params:
                return [DemoClip(**c) for c in saved["clips"]]
        clips = _generate(root, clips_per_class, num_frames, seed, size)
        _write_annotations(root, clips)
        write_atomic(index_path, json.dumps({"params": params, "clips": [c.__dict__ for c in clips]}, indent=1))
        return clips


def _generate(root: Path, clips_per_class: int, num_frames: int, seed: int, size: int) -> list[DemoClip]:
    n = num_frames * FRAMES_PER_SEGMENT
    clips: list[DemoClip] = []
    for kind, (forward, backward) in enumerate(PAIRS):
        rng = np.random.default_rng([seed, kind])
        for i in range(clips_per_class):
            frames = _render((forward, backward), rng, n, size)
            split = _split_of(i, clips_per_class)
            for label, video in ((forward, frames), (backward, frames[::-1])):
                slug = label.replace(" ", "-")
                rel = f"{slug}/{slug}-{i:04d}.mp4"
                (root / slug).mkdir(parents=True, exist_ok=True)
                write_video(root / rel, np.ascontiguousarray(video), fps=FPS)
                clips.append(DemoClip(clip_id=f"{slug}-{i:04d}", path=rel, label=label, split=split))
    return clips


def _write_annotations(root: Path, clips: list[DemoClip]) -> None:
    """The same clip list in the generic CSV format, so the demo doubles as an example of it."""
    lines = ["path,label,split,group"] + [f"{c.path},{c.label},{c.split},{twin_group(c)}" for c in clips]
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(name for pair in PAIRS for name in pair) + "\n")
