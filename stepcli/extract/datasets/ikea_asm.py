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

``gt_segments.json`` is ActivityNet-style with frame numbers; as in the official evaluation
code a segment covers frames ``[start_frame, end_frame)``. The class list is the official one:
``NA`` (unannotated frames) followed by the sorted atomic actions. ``--view`` picks the camera
(``dev3``, the top view, by default, as in the official baselines; ``dev1`` and ``dev2`` are
the two other, front and side, cameras). Splits come from the cross-environment split files (``--split-file``
names another ``train_*.txt``; its ``test_*.txt`` sibling is read with it), else from each
scan's ``subset``. Clip ids are ``<Furniture>/<scan>/<view>#<segment index>``.
"""

from __future__ import annotations

from pathlib import Path

from stepcli import StepcliError
from stepcli.extract.datasets import Clip, Dataset, DatasetOptions, register_dataset
from stepcli.extract.datasets.annotations import (
    entry_fields,
    first_existing,
    frame_range,
    read_json,
    restrict_classes,
    split_name,
)

VIEWS = ("dev1", "dev2", "dev3")
DEFAULT_VIEW = "dev3"
NA = "NA"


def read_action_list(path: Path) -> list[str]:
    """``NA`` then the atomic actions sorted, the order the official code gives class indices."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
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
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                split_of[line.strip().strip("/")] = split
    return split_of


@register_dataset("ikea-asm")
def ikea_asm_dataset(options: DatasetOptions) -> Dataset:
    if options.root is None:
        raise StepcliError("--dataset ikea-asm needs --root DIR (the dataset root with <Furniture>/<scan>/<view>/...)")
    root = Path(options.root)
    view = options.view or DEFAULT_VIEW
    if view not in VIEWS:
        raise StepcliError(f"--view {view!r}: IKEA ASM cameras are {', '.join(VIEWS)} (dev3 = top view)")
    ann = Path(options.annotations) if options.annotations else root / "gt_segments.json"
    data = read_json(ann)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise StepcliError(f"{ann}: missing key 'database' (expected ActivityNet-style gt_segments.json)")
    index_dir = first_existing(
        [root / "indexing_files", ann.parent / "indexing_files", ann.parent], "IKEA ASM indexing_files directory"
    )
    action_list = index_dir / "atomic_action_list.txt"
    if not action_list.is_file():
        raise StepcliError(f"IKEA ASM class list {action_list} not found")
    official = read_action_list(action_list)
    class_names = restrict_classes(official, options.classes, str(action_list))
    index = {name: i for i, name in enumerate(class_names)}

    split_file = Path(options.split_file) if options.split_file else index_dir / "train_cross_env.txt"
    if options.split_file is not None and not split_file.is_file():
        raise StepcliError(f"split file {split_file} not found")
    split_of = _split_lists(split_file) if split_file.is_file() else None

    clips: list[Clip] = []
    official_set = set(official)
    for scan, record in data["database"].items():
        where = f"{ann}: database[{scan!r}]"
        (segments,) = entry_fields(record, ["annotation"], where)
        if not isinstance(segments, list):
            raise StepcliError(f"{where}: 'annotation' is not a list")
        if split_of is not None:
            split = split_of.get(scan.strip("/"), "")
        elif isinstance(record.get("subset"), str):
            split = split_name(record["subset"], f"{where}.subset")
        else:
            split = ""
        video = str((root / scan / view / "images" / "scan_video.avi").resolve())
        for k, segment in enumerate(segments):
            at = f"{where}.annotation[{k}]"
            bounds, label = entry_fields(segment, ["segment", "label"], at)
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise StepcliError(f"{at}: 'segment' {bounds!r} is not [start_frame, end_frame]")
            first, stop = frame_range(bounds[0], bounds[1], at, ("start_frame", "end_frame"))
            if label not in official_set:
                raise StepcliError(f"{at}: label {label!r} is not in {action_list}")
            if label not in index:
                continue  # left out by --classes
            clips.append(Clip(f"{scan}/{view}#{k}", video, index[label], split, frame_range=(first, stop)))
    return Dataset(
        name="ikea-asm",
        clips=clips,
        class_names=class_names,
        source={
            "format": "ikea-asm-wacv2021",
            "annotations": str(ann.resolve()),
            "classes": str(action_list.resolve()),
            "split_file": str(split_file.resolve()) if split_of is not None else "subset",
            "root": str(root.resolve()),
            "view": view,
        },
    )
