"""The dataset registry: adapters register by name; loading one applies what every dataset shares
(unique ids, --exclude-classes, --pairs, --limit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.extract.datasets.base import Dataset, DatasetFn, DatasetOptions
from stepcli.extract.datasets.pairs import known_pairs
from stepcli.pairs import read_pairs

DATASETS: dict[str, DatasetFn] = {}


def register_dataset(name: str) -> Callable[[DatasetFn], DatasetFn]:
    def wrap(fn: DatasetFn) -> DatasetFn:
        DATASETS[name] = fn
        return fn

    return wrap


def load_dataset(name: str, options: DatasetOptions) -> Dataset:
    if name not in DATASETS:
        raise StepcliError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    dataset = DATASETS[name](options)
    _check_unique_ids(dataset)
    _exclude_classes(dataset, options.exclude_classes)
    if not dataset.clips and not dataset.rejected:
        source = options.annotations or options.root or name
        raise StepcliError(f"dataset {name} ({source}) lists no clips; an empty cache would train nothing")
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
    if pairs_file is not None:
        dataset.pairs = read_pairs(pairs_file, dataset.class_names)
    elif not dataset.pairs:
        dataset.pairs = known_pairs(name, dataset.class_names, dataset.official_classes)


def dataset_names() -> list[str]:
    return sorted(DATASETS)
