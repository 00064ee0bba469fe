"""The projected size of a cache, checked against the free disk space before any clip is extracted.

A full benchmark's cache can outgrow a disk (Something-Something v2 at 8 frames of ViT-B/14 tokens
is about 700 GB), and running out half-way wastes the hours spent until then. The projection
counts the float16 tokens of every clip still to do (views x layers x T x (P+N) x D) and the
per-view frame indices and timestamps; HDF5's own overhead is small beside it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from stepcli.cache.records import ExtractionRecord
from stepcli.errors import StepcliError
from stepcli.extract.datasets import Clip
from stepcli.units import human

log = logging.getLogger(__name__)


def bytes_per_view(extraction: ExtractionRecord) -> int:
    """Bytes one view of one clip takes: float16 tokens of every layer, plus frame index and time."""
    layout = extraction.layout
    per_view = len(extraction.layers) * layout.num_frames * layout.tokens_per_frame * layout.dim * 2
    return per_view + layout.num_frames * (8 + 8)


def projected_bytes(extraction: ExtractionRecord, clips: list[Clip]) -> int:
    """Bytes the shards of `clips` will take: tokens per layer and view, plus frame index and time."""
    return sum(extraction.views.views_of(c.split) for c in clips) * bytes_per_view(extraction)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds (or will hold) `path`."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


class WontFit(StepcliError):
    """The projected cache does not fit on the disk: raised before anything is written."""


def check_disk(out: Path, extraction: ExtractionRecord, todo: list[Clip], force: bool) -> None:
    """Log the projected size and the free space; refuse (before any work, in one line that gives
    both) when it will not fit."""
    need, free = projected_bytes(extraction, todo), free_bytes(out)
    if need > free and not force:
        raise WontFit(
            f"the cache needs about {human(need)} but {out} has {human(free)} free; free some space, use another "
            "--out, cut the budget (--pool 2x2, --tokens prefix, fewer --layers or views), or pass --force"
        )
    layout = extraction.layout
    log.info(
        f"projected cache size {human(need)} for {len(todo)} clips still to extract ({len(extraction.layers)} "
        f"layer(s), views {extraction.views.eval_views}+{extraction.views.train_views} train, "
        f"[T={layout.num_frames}, P+N={layout.tokens_per_frame}, D={layout.dim}] float16); free disk {human(free)}"
        + (" -- it will not fit: going on because of --force" if need > free else "")
    )
