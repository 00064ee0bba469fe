"""Reading official annotation files with one-line errors that name the file and the entry.

Shared by the official-dataset adapters (SSv2, Diving48, IKEA-ASM, Drive&Act). Every check
raises ``StepcliError`` with ``<file>:<line>`` or ``<file>: entry <n>`` in front, so a broken
download is found in one look instead of from a traceback deep inside the decoder.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepcli.errors import StepcliError
from stepcli.files import read_text

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    """The first of ``candidates`` that exists, or an error listing where it looked."""
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise StepcliError(f"{what} not found (looked for {looked})")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StepcliError(f"annotation file {path} not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise StepcliError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None


def json_list(path: Path) -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise StepcliError(f"{path}: expected a JSON list of entries, found {type(data).__name__}")
    return data


def entry_fields(entry: Any, keys: Iterable[str], where: str) -> list:
    """``entry[key]`` for each key; ``where`` names the file and entry in the error."""
    if not isinstance(entry, dict):
        raise StepcliError(f"{where}: expected an object with keys {', '.join(keys)}, found {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise StepcliError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
    return [entry[k] for k in keys]


def video_name(value: Any, where: str, name: str) -> str:
    """A video's name or id as given (a string, or an integer id); blank, control characters (a NUL
    or newline) or another type is an error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or not str(value).strip()
        or not str(value).isprintable()
    ):
        raise StepcliError(f"{where}: {name} {value!r} does not name a video")
    return str(value)


def frame_number(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool):
        raise StepcliError(f"{where}: {name} {value!r} is not a frame number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise StepcliError(f"{where}: {name} {value!r} is not a frame number")
    return value


def frame_range(start: Any, end: Any, where: str, names: tuple[str, str] = ("start", "end")) -> tuple[int, int]:
    """``(start, end)`` as ints, end exclusive; end at or before start is an annotation error."""
    first = frame_number(start, where, names[0])
    stop = frame_number(end, where, names[1])
    if stop <= first:
        raise StepcliError(f"{where}: {names[1]} {stop} is not after {names[0]} {first}")
    return first, stop


def csv_rows(path: Path, columns: Iterable[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` per data row, ``where`` = ``file:line``; a missing column is an error."""
    path = Path(path)
    if not path.is_file():
        raise StepcliError(f"annotation file {path} not found")
    columns = list(columns)
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in columns if c not in header]
        if missing:
            raise StepcliError(f"{path}:1: header lacks column(s) {', '.join(missing)}; expected {','.join(columns)}")
        for row in reader:
            if None in row or any(row.get(c) is None for c in columns):
                raise StepcliError(f"{path}:{reader.line_num}: expected {len(header)} columns")
            yield f"{path}:{reader.line_num}", {k: v.strip() for k, v in row.items()}


def restrict_classes(official: list[str], classes: Path | None, source: str) -> list[str]:
    """The class list: ``official``, or the ``--classes`` subset of it in the file's order.

    A name in the ``--classes`` file that the dataset does not have is an error; clips of
    classes left out are left out of the dataset (a restriction, not a failure).
    """
    if classes is None:
        return list(official)
    path = Path(classes)
    if not path.is_file():
        raise StepcliError(f"class list {path} not found")
    known = set(official)
    names: list[str] = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name not in known:
            raise StepcliError(f"{path}:{n}: class {name!r} is not in {source}")
        if name in names:
            raise StepcliError(f"{path}:{n}: class {name!r} is listed twice")
        names.append(name)
    if not names:
        raise StepcliError(f"class list {path} is empty")
    return names


def split_name(value: str, where: str) -> str:
    try:
        return SPLIT_NAMES[value.strip().lower()]
    except KeyError:
        raise StepcliError(f"{where}: split {value!r} is not one of {', '.join(sorted(SPLIT_NAMES))}") from None


@dataclass(frozen=True)
class Layout:
    """Where one way of laying a dataset out keeps its annotation files and its videos, under --root.

    ``videos`` lists the folders the videos may be in, most specific first (an archive unpacked
    in place, or moved into ``videos/``).
    """

    name: str
    annotations: str
    videos: tuple[str, ...]


def locate(
    root: Path, annotations: Path | None, layouts: list[Layout], key_files: list[str], dataset: str
) -> tuple[Path, Path, str]:
    """``(annotation folder, video folder, layout name)`` of the dataset under ``root``.

    ``--annotations`` (a folder, or one file in it) overrides where the annotation files are; the
    videos are then looked for in every layout's video folders under ``root``, else ``root``
    itself. Without it the first layout whose key file is there wins; none is a one-line error
    listing where it looked and which flags override.
    """
    if annotations is not None:
        ann_dir = annotations.parent if annotations.is_file() else annotations
        folders = dict.fromkeys(v for layout in layouts for v in layout.videos)
        videos = next((root / v for v in folders if (root / v).is_dir()), root)
        return ann_dir, videos, "--annotations"
    looked = []
    for layout in layouts:
        ann_dir = root / layout.annotations
        if any((ann_dir / key).is_file() for key in key_files):
            videos = next((root / v for v in layout.videos if (root / v).is_dir()), None)
            if videos is None:
                where = ", ".join(str(root / v) for v in layout.videos)
                raise StepcliError(
                    f"{dataset}: found the {layout.name} annotations in {ann_dir} but no video folder ({where}); "
                    "pass --root DIR (the videos) and --annotations DIR"
                )
            return ann_dir, videos, layout.name
        looked.append(f"{ann_dir / key_files[0]} ({layout.name})")
    raise StepcliError(
        f"{dataset}: no known layout under {root} (looked for {'; '.join(looked)}); "
        "pass --annotations DIR (the annotation files) and --root DIR (the videos)"
    )
