"""``--dataset drive-act``: Drive&Act activity segments inside the long per-view recordings.

Reads the ``activities_3s`` annotation release of Drive&Act (Martin et al., ICCV 2019): per
camera view, one CSV per hierarchy level, person-disjoint split (0, 1, 2) and part::

    <root>/activities_3s/<view>/            --annotations DIR [default: the first of
        midlevel.chunks_90.split_0.train.csv     ROOT/activities_3s/<view>,
        midlevel.chunks_90.split_0.val.csv       ROOT/iccv_activities_3s/activities_3s/<view>]
        midlevel.chunks_90.split_0.test.csv
        ... split_1, split_2; tasklevel.*, objectlevel.*
            participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id
            1,vp1/run1b_2018-05-29-14-02-47.kinect_color,0,0,90,closing_door_outside,0
    <root>/<view>/<file_id>.mp4             (or ROOT/<file_id>.mp4)

Each row is one chunk of at most 90 frames (3 s) of an annotated activity; ``[frame_start,
frame_end)`` is read with the end exclusive (consecutive chunks share the boundary value). The
fine-grained level (``midlevel``, 34 activities) and split 0 are the default; ``--split-file``
takes either one of the CSVs (its level and split number select the train/val/test triple) or
just the split number ``0``, ``1`` or ``2``. ``--view`` is the camera [kinect_color, the RGB
view]. Drive&Act ships no separate class list: the classes are the activities of the three
files of the chosen split, sorted, so class indices are the same for every split and part.
Clip ids are ``<file_id>:<annotation_id>:<chunk_id>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from stepcli import StepcliError
from stepcli.extract.datasets import Clip, Dataset, DatasetOptions, register_dataset
from stepcli.extract.datasets.annotations import csv_rows, first_existing, frame_range, restrict_classes, video_name

COLUMNS = ["participant_id", "file_id", "annotation_id", "frame_start", "frame_end", "activity", "chunk_id"]
DEFAULT_VIEW = "kinect_color"
DEFAULT_LEVEL = "midlevel"  # the fine-grained activities
PARTS = {"train": "train", "val": "val", "test": "test"}
FILE_PATTERN = re.compile(
    r"^(?P<level>\w+)\.chunks_(?P<chunk>\d+)\.split_(?P<split>\d+)\.(?P<part>train|val|test)\.csv$"
)


def _split_files(options: DatasetOptions, root: Path | None, view: str) -> list[tuple[Path, str]]:
    """The (CSV, split) triple of one level and person-disjoint split."""
    choice = options.split_file
    if choice is not None and Path(choice).is_file():
        path = Path(choice)
        match = FILE_PATTERN.match(path.name)
        if match is None:  # a file of one's own: one part, named by its name where possible
            part = next((p for p in PARTS if f".{p}." in path.name or path.stem.endswith(p)), "")
            return [(path, PARTS.get(part, ""))]
        level, chunk, split = match["level"], match["chunk"], match["split"]
        directory = path.parent
    else:
        split = str(choice) if choice is not None else "0"
        if split not in ("0", "1", "2"):
            raise StepcliError(f"--split-file {choice}: neither a file nor a Drive&Act split number 0, 1 or 2")
        level, chunk = options.extra.get("level", DEFAULT_LEVEL), "90"
        if options.annotations is not None:
            directory = Path(options.annotations)
        elif root is not None:
            directory = first_existing(
                [root / "activities_3s" / view, root / "iccv_activities_3s" / "activities_3s" / view],
                f"Drive&Act annotations for view {view!r}",
            )
        else:
            raise StepcliError("--dataset drive-act needs --root DIR or --annotations DIR")
    files = [(directory / f"{level}.chunks_{chunk}.split_{split}.{p}.csv", s) for p, s in PARTS.items()]
    for path, _ in files:
        if not path.is_file():
            raise StepcliError(f"Drive&Act annotation file {path} not found")
    return files


@register_dataset("drive-act")
def drive_act_dataset(options: DatasetOptions) -> Dataset:
    root = Path(options.root) if options.root else None
    view = options.view or DEFAULT_VIEW
    files = _split_files(options, root, view)
    rows = [(where, row, split) for path, split in files for where, row in csv_rows(path, COLUMNS)]
    official = sorted({row["activity"] for _, row, _ in rows if row["activity"]})
    class_names = restrict_classes(
        official, options.classes, "the activities of " + ", ".join(str(p) for p, _ in files)
    )
    index = {name: i for i, name in enumerate(class_names)}
    if root is None:
        root = files[0][0].parent
    video_dir = root / view if (root / view).is_dir() else root

    clips: list[Clip] = []
    seen: dict[str, str] = {}
    for where, row, split in rows:
        if not row["activity"]:
            raise StepcliError(f"{where}: empty activity")
        video_name(row["file_id"], where, "file_id")
        first, stop = frame_range(row["frame_start"], row["frame_end"], where, ("frame_start", "frame_end"))
        clip_id = f"{row['file_id']}:{row['annotation_id']}:{row['chunk_id']}"
        if clip_id in seen:
            raise StepcliError(f"{where}: clip {clip_id!r} is listed twice (also {seen[clip_id]})")
        seen[clip_id] = where
        if row["activity"] not in index:
            continue  # left out by --classes
        video = str((video_dir / f"{row['file_id']}.mp4").resolve())
        clips.append(Clip(clip_id, video, index[row["activity"]], split, frame_range=(first, stop)))
    return Dataset(
        name="drive-act",
        clips=clips,
        class_names=class_names,
        source={
            "format": "drive-and-act-activities_3s",
            "annotations": [str(p.resolve()) for p, _ in files],
            "videos": str(video_dir.resolve()),
            "view": view,
        },
    )
