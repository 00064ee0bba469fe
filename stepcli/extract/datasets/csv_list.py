"""``--dataset csv``: the generic ``path,label[,start,end][,split]`` list (paths relative to --root).

``start``/``end`` are seconds; an empty cell means the start or end of the video. Without
``--classes`` the class list is the sorted set of labels; with it, a label outside the list is
recorded as a failed clip rather than silently added.
"""

from __future__ import annotations

import csv
from pathlib import Path

from stepcli import StepcliError
from stepcli.extract.datasets import Clip, Dataset, DatasetOptions, Rejected, register_dataset


def read_class_list(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise StepcliError(f"class list {path} not found")
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise StepcliError(f"class list {path} names a class twice")
    return names


def _seconds(value: str | None, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise StepcliError(f"{where}: {value!r} is not a time in seconds") from None


@register_dataset("csv")
def csv_dataset(options: DatasetOptions) -> Dataset:
    if options.annotations is None:
        raise StepcliError("--dataset csv needs --annotations FILE (columns path,label[,start,end][,split])")
    ann = Path(options.annotations)
    if not ann.is_file():
        raise StepcliError(f"annotation file {ann} not found")
    root = Path(options.root) if options.root else ann.parent
    with open(ann, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise StepcliError(
                f"{ann}:1: header lacks column(s) {', '.join(sorted(missing))}; expected path,label[,start,end][,split]"
            )
        rows = [(n, row) for n, row in enumerate(reader, start=2)]
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
        clips.append(Clip(clip_id, full, index[row["label"]], split, start, end))
    return Dataset(
        name="csv",
        clips=clips,
        class_names=class_names,
        rejected=rejected,
        source={"annotations": str(ann.resolve()), "root": str(root.resolve())},
    )
