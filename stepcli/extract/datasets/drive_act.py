"""``--dataset drive-act``: Drive&Act activity segments inside the long per-view recordings.

Reads the ``activities_3s`` annotation release of Drive&Act (Martin et al., ICCV 2019,
``iccv_activities_3s.zip``) with the videos of one camera view (``kinect_color.zip``,
``inner_mirror.zip``, ...); ``--root`` alone finds them::

    ROOT/activities_3s/<view>/                  (or ROOT/iccv_activities_3s/activities_3s/<view>/)
        midlevel.chunks_90.split_{0,1,2}.{train,val,test}.csv   tasklevel.*, objectlevel.*
            participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id
            1,vp1/run1b_2018-05-29-14-02-47.kinect_color,0,0,90,closing_door_outside,0
    ROOT/<view>/<vp>/<run>.<view>.mp4          e.g. ROOT/kinect_color/vp1/run1b_2018-05-29-14-02-47.kinect_color.mp4

Each row is one chunk of at most 90 frames (3 s of the 30 fps views) of an annotated activity;
``[frame_start, frame_end)`` is read with the end exclusive (consecutive chunks share the
boundary value). Frame numbers count the frames of the recording ``file_id`` names (its suffix
is the view, e.g. ``.kinect_color``), and the views run at different frame rates (``VIEWS``):
the Kinect colour stream at 15 fps, the near-infrared cameras at 30. So a chunk is turned into
seconds with the rate of the stream it counts and cut from the chosen view's video by time:
``--view inner_mirror`` with only the ``kinect_color`` annotation files takes frames 0..179 of
the inner-mirror video for the Kinect's frames 0..89. The annotation folder of ``--view`` is
used when present, else that of ``kinect_color``. A chunk that ends after its video is a failed
clip with the reason, not a shorter clip.

The fine-grained level (``midlevel``, 34 activities) and split 0 are the default; ``--split-file``
takes either one of the CSVs (its level and split number select the train/val/test triple) or
just the split number ``0``, ``1`` or ``2``. Drive&Act ships no separate class list: the classes
are the activities of the three files of the chosen split, sorted, so class indices are the same
for every split and part. There is no mmaction2 layout for Drive&Act. Clip ids are
``<file_id>:<annotation_id>:<chunk_id>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.extract.datasets.annotations import csv_rows, frame_range, restrict_classes, video_name
from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions
from stepcli.extract.datasets.registry import register_dataset

COLUMNS = ["participant_id", "file_id", "annotation_id", "frame_start", "frame_end", "activity", "chunk_id"]
# camera view -> frame rate of its recordings (frames per second), which the annotation frame
# numbers count: the Kinect's colour camera runs at half the rate of its infrared and depth
# streams and of the five near-infrared cameras (ids_1..ids_5 of the release, in this order)
VIEWS: dict[str, float] = {
    "kinect_color": 15.0,
    "kinect_ir": 30.0,
    "kinect_depth": 30.0,
    "inner_mirror": 30.0,
    "a_column_co_driver": 30.0,
    "ceiling": 30.0,
    "steering_wheel": 30.0,
    "a_column_driver": 30.0,
}
DEFAULT_VIEW = "kinect_color"
DEFAULT_LEVEL = "midlevel"  # the fine-grained activities
PARTS = {"train": "train", "val": "val", "test": "test"}
ANNOTATION_DIRS = ("activities_3s", "iccv_activities_3s/activities_3s")
FILE_PATTERN = re.compile(
    r"^(?P<level>\w+)\.chunks_(?P<chunk>\d+)\.split_(?P<split>\d+)\.(?P<part>train|val|test)\.csv$"
)


def _view(options: DatasetOptions) -> str:
    view = options.view or DEFAULT_VIEW
    if view not in VIEWS:
        raise StepcliError(f"--view {view!r}: Drive&Act views are {', '.join(VIEWS)}")
    return view


def _annotation_dir(options: DatasetOptions, root: Path | None, view: str) -> Path:
    """``--annotations``, else the view's own folder, else the Kinect colour one (mapped by time)."""
    if options.annotations is not None:
        return Path(options.annotations)
    if root is None:
        raise StepcliError("--dataset drive-act needs --root DIR or --annotations DIR")
    looked = [root / d / v for v in dict.fromkeys([view, DEFAULT_VIEW]) for d in ANNOTATION_DIRS]
    for directory in looked:
        if directory.is_dir():
            return directory
    raise StepcliError(
        f"drive-act: no activities_3s annotations under {root} (looked in {', '.join(map(str, looked))}); "
        "unpack iccv_activities_3s.zip there or pass --annotations DIR"
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
        directory = _annotation_dir(options, root, view)
    files = [(directory / f"{level}.chunks_{chunk}.split_{split}.{p}.csv", s) for p, s in PARTS.items()]
    for path, _ in files:
        if not path.is_file():
            raise StepcliError(f"Drive&Act annotation file {path} not found")
    return files


def _counted_view(file_id: str, annotation_file: Path, where: str) -> str:
    """The view whose frames a row counts: the suffix of its file_id, else its annotation folder's name."""
    for view in (file_id.rsplit(".", 1)[-1], annotation_file.parent.name):
        if view in VIEWS:
            return view
    raise StepcliError(
        f"{where}: cannot tell which view's frames file_id {file_id!r} counts (known views: {', '.join(VIEWS)})"
    )


def _video(video_dir: Path, file_id: str, view: str) -> str:
    """``<vp>/<run>.<view>.mp4`` of the chosen view for a file_id of any view."""
    stem = file_id.rsplit(".", 1)[0] if file_id.rsplit(".", 1)[-1] in VIEWS else file_id
    return str((video_dir / f"{stem}.{view}.mp4").resolve())


def _row_clip(where: str, row: dict, split: str, path: Path, index: dict[str, int], video_dir: Path, view: str):
    """The clip of one annotation row, its time span from the frame rate of the stream it counts."""
    if not row["activity"]:
        raise StepcliError(f"{where}: empty activity")
    video_name(row["file_id"], where, "file_id")
    first, stop = frame_range(row["frame_start"], row["frame_end"], where, ("frame_start", "frame_end"))
    rate = VIEWS[_counted_view(row["file_id"], path, where)]
    clip_id = f"{row['file_id']}:{row['annotation_id']}:{row['chunk_id']}"
    if row["activity"] not in index:
        return clip_id, None  # left out by --classes
    video = _video(video_dir, row["file_id"], view)
    return clip_id, Clip(clip_id, video, index[row["activity"]], split, start=first / rate, end=stop / rate)


@register_dataset("drive-act")
def drive_act_dataset(options: DatasetOptions) -> Dataset:
    root = Path(options.root) if options.root else None
    view = _view(options)
    files = _split_files(options, root, view)
    rows = [(where, row, split, path) for path, split in files for where, row in csv_rows(path, COLUMNS)]
    official = sorted({row["activity"] for _, row, _, _ in rows if row["activity"]})
    class_names = restrict_classes(
        official, options.classes, "the activities of " + ", ".join(str(p) for p, _ in files)
    )
    index = {name: i for i, name in enumerate(class_names)}
    if root is None:
        root = files[0][0].parent
    video_dir = root / view if (root / view).is_dir() else root

    clips: list[Clip] = []
    seen: dict[str, str] = {}
    for where, row, split, path in rows:
        clip_id, clip = _row_clip(where, row, split, path, index, video_dir, view)
        if clip_id in seen:
            raise StepcliError(f"{where}: clip {clip_id!r} is listed twice (also {seen[clip_id]})")
        seen[clip_id] = where
        if clip is not None:
            clips.append(clip)
    return Dataset(
        name="drive-act",
        clips=clips,
        class_names=class_names,
        official_classes=official,
        source={
            "format": "drive-and-act-activities_3s",
            "annotations": [str(p.resolve()) for p, _ in files],
            "videos": str(video_dir.resolve()),
            "view": view,
            "frame_rates": dict(VIEWS),
        },
    )
