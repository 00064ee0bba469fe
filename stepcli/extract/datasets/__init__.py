"""Dataset adapters: each turns a dataset's own annotation files into a list of clips.

An adapter is a function registered in ``DATASETS`` that takes ``DatasetOptions`` and returns a
``Dataset``. Adding a dataset is one module and one ``@register_dataset`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from stepcli import StepcliError


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
DATASETS: dict[str, DatasetFn] = {}


def register_dataset(name: str) -> Callable[[DatasetFn], DatasetFn]:
    def wrap(fn: DatasetFn) -> DatasetFn:
        DATASETS[name] = fn
        return fn

    return wrap


def load_dataset(name: str, options: DatasetOptions) -> Dataset:
    _import_adapters()
    if name not in DATASETS:
        raise StepcliError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    dataset = DATASETS[name](options)
    _check_unique_ids(dataset)
    _exclude_classes(dataset, options.exclude_classes)
    _set_pairs(name, dataset, options.pairs)
    if options.limit is not None:
        dataset.clips = dataset.clips[: options.limit]
    return dataset


def _check_unique_ids(dataset: Dataset) -> None:
    seen: set[str] = set()
    for clip in dataset.clips:
        if clip.clip_id in seen:
            raise StepcliError(
                f"duplicate clip id {clip.clip_id!r} in dataset {dataset.name!r}; clip ids must be unique"
            )
        seen.add(clip.clip_id)


def _exclude_classes(dataset: Dataset, names: tuple[str, ...]) -> None:
    """Drop the classes ``names`` and their clips, and renumber the rest in their order.

    Generic, so every dataset has it; recorded in the manifest's dataset source so that a cache
    says which classes it was made without.
    """
    if not names:
        return
    unknown = [n for n in names if n not in dataset.class_names]
    if unknown:
        raise StepcliError(
            f"--exclude-classes {unknown[0]!r}: {dataset.name} has no such class "
            f"(its classes include {', '.join(repr(c) for c in dataset.class_names[:5])}, ...)"
        )
    kept = [c for c in dataset.class_names if c not in names]
    if not kept:
        raise StepcliError(f"--exclude-classes leaves no class of {dataset.name}")
    new_index = {dataset.class_names.index(c): i for i, c in enumerate(kept)}
    dataset.clips = [replace(c, label=new_index[c.label]) for c in dataset.clips if c.label in new_index]
    if dataset.official_classes is None:
        dataset.official_classes = list(dataset.class_names)
    dataset.class_names = kept
    dataset.pairs = [(a, b) for a, b in dataset.pairs if a in kept and b in kept]
    dataset.source = {**dataset.source, "exclude_classes": list(names)}


def _set_pairs(name: str, dataset: Dataset, pairs_file: Path | None) -> None:
    from stepcli.extract.datasets.pairs import known_pairs
    from stepcli.pairs import read_pairs

    if pairs_file is not None:
        dataset.pairs = read_pairs(pairs_file, dataset.class_names)
    elif not dataset.pairs:
        dataset.pairs = known_pairs(name, dataset.class_names, dataset.official_classes)


def dataset_names() -> list[str]:
    _import_adapters()
    return sorted(DATASETS)


def _import_adapters() -> None:
    # imported for their @register_dataset side effect
    from stepcli.extract.datasets import csv_list, demo, diving48, drive_act, ikea_asm, ssv2  # noqa: F401
