"""``--dataset ikea-asm``: IKEA ASM atomic-action segments inside the long per-camera videos.

Reads the action annotations of the IKEA ASM release (Ben-Shabat et al., WACV 2021; the layout
of the IkeaASM/IKEA_ASM_Dataset code), 33 classes including ``NA``::

    <root>/
        gt_segments.json                   --annotations FILE [default: ROOT/gt_segments.json]
            {"version": ..., "database": {"Lack_TV_Bench/0007_white_floor_08_04_2019_08_28_10_47":
                {"subset": "training", "annotation": [{"segment": [start_frame, end_frame],
                                                       "label": "pick up leg"}, ...]}, ...}}
        indexing_files/atomic_action_list.txt   one class per line
        indexing_files/train_cross_env.txt      one <Furniture>/<scan> per line (official split)
        indexing_files/test_cross_env.txt
        <Furniture>/<scan>/<dev1|dev2|dev3>/images/scan_video.avi

``gt_segments.json`` is ActivityNet-style with frame numbers and *inclusive* ends, as the
release writes them: consecutive segments read ``[0, 57], [58, 170]`` (almost every next start
is the previous end + 1), so ``[58, 170]`` is the 113 frames 58..170. The class list is the
official one: ``NA`` (frames no action was annotated on, a large share of all segments)
followed by the sorted atomic actions; ``--exclude-classes NA`` leaves them out. ``--view``
picks the camera (``dev3``, the top view, by default, as in the official baselines; ``dev1``
and ``dev2`` are the two other, front and side, cameras). Splits come from the
cross-environment split files (``--split-file`` names another ``train_*.txt``; its
``test_*.txt`` sibling is read with it), else from each scan's ``subset``. Clip ids are
``<Furniture>/<scan>/<view>#<segment index>``. There is no mmaction2 layout for IKEA ASM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepcli.errors import StepcliError
from stepcli.extract.datasets.annotations import (
    Layout,
    entry_fields,
    first_existing,
    frame_number,
    locate,
    read_json,
    restrict_classes,
    split_name,
    video_name,
)
from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions
from stepcli.extract.datasets.registry import register_dataset
from stepcli.files import read_text

VIEWS = ("dev1", "dev2", "dev3")
DEFAULT_VIEW = "dev3"
NA = "NA"
GT_SEGMENTS = "gt_segments.json"


def read_action_list(path: Path) -> list[str]:
    """``NA`` then the atomic actions sorted, the order the official code gives class indices."""
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise StepcliError(f"{path}: no classes")
    if len(set(names)) != len(names):
        raise StepcliError(f"{path}: a class is listed twice")
    return [NA] + sorted(n for n in names if n != NA)


def _split_lists(train_file: Path) -> dict[str, str]:
    test_file = train_file.with_name(train_file.name.replace("train", "test", 1))
    if not test_file.is_file() or test_file == train_file:
        raise StepcliError(f"split file {train_file}: its test list {test_file} not found")
    split_of: dict[str, str] = {}
    for split, path in (("train", train_file), ("test", test_file)):
        for line in read_text(path).splitlines():
            if line.strip():
                split_of[line.strip().strip("/")] = split
    return split_of


def _view(options: DatasetOptions) -> str:
    view = options.view or DEFAULT_VIEW
    if view not in VIEWS:
        raise StepcliError(f"--view {view!r}: IKEA ASM cameras are {', '.join(VIEWS)} (dev3 = top view)")
    return view


def _read_database(ann: Path) -> dict:
    """The ``database`` of ``gt_segments.json``: ``{"<Furniture>/<scan>": record}``."""
    data = read_json(ann)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise StepcliError(f"{ann}: missing key 'database' (expected ActivityNet-style gt_segments.json)")
    return data["database"]


@dataclass(frozen=True)
class _Classes:
    """What a segment's label is checked against and mapped by.

    ``official``: every label a segment may carry; ``index``: those kept by ``--classes``, with their
    class index; ``source``: the class list file, named when a label is not in it.
    """

    official: frozenset[str]
    index: dict[str, int]
    source: Path


def _read_classes(index_dir: Path, options: DatasetOptions) -> tuple[_Classes, list[str]]:
    """The classes from ``atomic_action_list.txt``, and the class names of the dataset in index order."""
    action_list = index_dir / "atomic_action_list.txt"
    if not action_list.is_file():
        raise StepcliError(f"IKEA ASM class list {action_list} not found")
    official = read_action_list(action_list)
    class_names = restrict_classes(official, options.classes, str(action_list))
    index = {name: i for i, name in enumerate(class_names)}
    return _Classes(frozenset(official), index, action_list), class_names


def _read_splits(options: DatasetOptions, index_dir: Path) -> tuple[Path, dict[str, str] | None]:
    """The split file and its ``{scan: split}``.

    ``None`` when no ``--split-file`` is given and the default one is absent: splits then come from
    each scan's ``subset``.
    """
    split_file = Path(options.split_file) if options.split_file else index_dir / "train_cross_env.txt"
    if options.split_file is not None and not split_file.is_file():
        raise StepcliError(f"split file {split_file} not found")
    return split_file, _split_lists(split_file) if split_file.is_file() else None


def _scan_split(scan: str, record: dict, split_of: dict[str, str] | None, where: str) -> str:
    """The split files decide when read; otherwise the scan's own ``subset``, if it has one."""
    if split_of is not None:
        return split_of.get(scan.strip("/"), "")
    if isinstance(record.get("subset"), str):
        return split_name(record["subset"], f"{where}.subset")
    return ""


def _segment(segment: object, at: str, classes: _Classes) -> tuple[str, int, int]:
    """``(label, first frame, stop frame)`` of one annotated segment, checked; stop is exclusive."""
    bounds, label = entry_fields(segment, ["segment", "label"], at)
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise StepcliError(f"{at}: 'segment' {bounds!r} is not [start_frame, end_frame]")
    first = frame_number(bounds[0], at, "start_frame")
    last = frame_number(bounds[1], at, "end_frame")
    if last < first:
        raise StepcliError(f"{at}: end_frame {last} is before start_frame {first} (both are inclusive)")
    if not isinstance(label, str) or label not in classes.official:
        raise StepcliError(f"{at}: label {label!r} is not in {classes.source}")
    return label, first, last + 1


def _scan_clips(
    scan: str, record: Any, ann: Path, root: Path, view: str, split_of: dict[str, str] | None, classes: _Classes
) -> list[Clip]:
    """The clips of one scan's segments, all in the one video of camera ``view``."""
    where = f"{ann}: database[{scan!r}]"
    video_name(scan, where, "scan")
    (segments,) = entry_fields(record, ["annotation"], where)
    if not isinstance(segments, list):
        raise StepcliError(f"{where}: 'annotation' is not a list")
    split = _scan_split(scan, record, split_of, where)
    video = str((root / scan / view / "images" / "scan_video.avi").resolve())
    clips: list[Clip] = []
    for k, segment in enumerate(segments):
        label, first, stop = _segment(segment, f"{where}.annotation[{k}]", classes)
        if label not in classes.index:
            continue  # left out by --classes
        clips.append(Clip(f"{scan}/{view}#{k}", video, classes.index[label], split, frame_range=(first, stop)))
    return clips


@register_dataset("ikea-asm")
def ikea_asm_dataset(options: DatasetOptions) -> Dataset:
    if options.root is None:
        raise StepcliError("--dataset ikea-asm needs --root DIR (the dataset root with <Furniture>/<scan>/<view>/...)")
    root = Path(options.root)
    view = _view(options)
    if options.annotations is not None:
        ann = Path(options.annotations)
    else:
        ann_dir, _, _ = locate(root, None, [Layout("official release", ".", (".",))], [GT_SEGMENTS], "ikea-asm")
        ann = ann_dir / GT_SEGMENTS
    database = _read_database(ann)
    index_dir = first_existing(
        [root / "indexing_files", ann.parent / "indexing_files", ann.parent], "IKEA ASM indexing_files directory"
    )
    classes, class_names = _read_classes(index_dir, options)
    split_file, split_of = _read_splits(options, index_dir)
    clips: list[Clip] = []
    for scan, record in database.items():
        clips += _scan_clips(scan, record, ann, root, view, split_of, classes)
    return Dataset(
        name="ikea-asm",
        clips=clips,
        class_names=class_names,
        official_classes=sorted(classes.official),
        source={
            "format": "ikea-asm-wacv2021",
            "annotations": str(ann.resolve()),
            "classes": str(classes.source.resolve()),
            "split_file": str(split_file.resolve()) if split_of is not None else "subset",
            "root": str(root.resolve()),
            "view": view,
        },
    )
