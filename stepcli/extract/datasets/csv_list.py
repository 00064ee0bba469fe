"""``--dataset csv``: the generic ``path,label[,start,end][,split][,group]`` list (paths under --root).

``group`` names clips that belong together (windows of one recording, a clip and its reversal):
no split drawn from the cache puts one group in two splits; without it a clip's group is its
video file. ``start``/``end`` are seconds; an empty cell means the start or end of the video. Without
``--classes`` the class list is the sorted set of labels; with it, a label outside the list is
recorded as a failed clip rather than silently added.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions, Rejected
from stepcli.extract.datasets.registry import register_dataset
from stepcli.files import read_text


def read_class_list(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise StepcliError(f"class list {path} not found")
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise StepcliError(f"class list {path} names a class twice")
    return names


def _seconds(value: str | None, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise StepcliError(f"{where}: {value!r} is not a time in seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise StepcliError(f"{where}: {value!r} is not a time in seconds (finite, >= 0)")
    return seconds


def _check_row(row: dict, where: str, columns: int) -> None:
    """A row has a cell for every column of the header and a path and a label (extra cells are ignored)."""
    if any(value is None for key, value in row.items() if key is not None):
        raise StepcliError(f"{where}: expected {columns} columns")
    for key in ("path", "label"):
        if not row[key].strip() or "\x00" in row[key]:
            raise StepcliError(f"{where}: {key} {row[key]!r} is empty or not text")


@register_dataset("csv")
def csv_dataset(options: DatasetOptions) -> Dataset:
    if options.annotations is None:
        raise StepcliError("--dataset csv needs --annotations FILE (columns path,label[,start,end][,split][,group])")
    ann = Path(options.annotations)
    if not ann.is_file():
        raise StepcliError(f"annotation file {ann} not found")
    root = Path(options.root) if options.root else ann.parent
    with io.StringIO(read_text(ann), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise StepcliError(
                f"{ann}:1: header lacks column(s) {', '.join(sorted(missing))}; expected path,label[,start,end][,split][,group]"
            )
        rows = [(n, row) for n, row in enumerate(reader, start=2)]
        for n, row in rows:
            _check_row(row, f"{ann}:{n}", len(reader.fieldnames))
    class_names = read_class_list(options.classes) if options.classes else sorted({r["label"] for _, r in rows})
    index = {name: i for i, name in enumerate(class_names)}
    clips, rejected, seen = [], [], set()
    for line, row in rows:
        where = f"{ann}:{line}"
        path = row["path"].strip()
        start, end = _seconds(row.get("start"), where), _seconds(row.get("end"), where)
        clip_id = (
            path
            if start is None and end is None
            else f"{path}@{start or 0:g}-{'end' if end is None else format(end, 'g')}"
        )
        if clip_id in seen:
            raise StepcliError(f"{where}: clip {clip_id!r} is listed twice")
        seen.add(clip_id)
        if start is not None and end is not None and end <= start:
            raise StepcliError(f"{where}: end {end} is not after start {start}")
        full = str((root / path).resolve())
        if row["label"] not in index:
            rejected.append(Rejected(clip_id, full, f"label {row['label']!r} is not in the class list"))
            continue
        split = (row.get("split") or "").strip()
        if split and split not in ("train", "val", "test"):
            raise StepcliError(f"{where}: split {split!r} must be train, val or test")
        group = (row.get("group") or "").strip()  # clips of one group never go to two splits
        clips.append(Clip(clip_id, full, index[row["label"]], split, start, end, group=group))
    return Dataset(
        name="csv",
        clips=clips,
        class_names=class_names,
        rejected=rejected,
        source={"annotations": str(ann.resolve()), "root": str(root.resolve())},
    )
