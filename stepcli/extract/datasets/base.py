"""What a dataset adapter makes: clips, the dataset they form, and the options every adapter takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One labelled clip: a whole video file or a segment ``[start, end)`` of it.

    ``start``/``end`` are in seconds; datasets that annotate frame numbers set ``frame_range``
    (inclusive start, exclusive end) instead and the decoder converts them with the stream's
    frame rate.
    """

    clip_id: str
    path: str
    label: int
    split: str = ""
    start: float | None = None
    end: float | None = None
    frame_range: tuple[int, int] | None = None
    #: what the clip belongs with, which no split may cut apart ("": its source video, `path`)
    group: str = ""

    @property
    def group_key(self) -> str:
        return self.group or self.path


@dataclass(frozen=True)
class Rejected:
    """A clip the annotations name but that cannot be extracted (e.g. label outside the class list)."""

    clip_id: str
    path: str
    reason: str


@dataclass
class Dataset:
    name: str
    clips: list[Clip]
    class_names: list[str]
    pairs: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: what identifies this dataset's clip list in the manifest (root, annotation files, options)
    source: dict = field(default_factory=dict)
    #: every class the dataset's own files define, before --classes / --exclude-classes; a built-in
    #: pair naming a class outside it is a mistake worth a warning (None: the same as class_names)
    official_classes: list[str] | None = None


@dataclass
class DatasetOptions:
    """Options shared by every adapter; an adapter ignores those it has no use for."""

    root: Path | None = None
    annotations: Path | None = None
    classes: Path | None = None
    split_file: Path | None = None
    view: str | None = None
    limit: int | None = None
    seed: int = 0
    num_frames: int = 8
    size: int | None = None  # demo: clips per class
    pairs: Path | None = None  # replaces the dataset's built-in nearly-symmetric pairs
    exclude_classes: tuple[str, ...] = ()  # class names dropped with their clips (e.g. IKEA ASM's "NA")
    extra: dict = field(default_factory=dict)


DatasetFn = Callable[[DatasetOptions], Dataset]
