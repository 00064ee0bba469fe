"""``--dataset ssv2``: Something-Something v2, as released or as mmaction2 prepares it.

Reads the v2 release (20BN, 2018; the same JSON files are in the later Qualcomm download),
174 classes. ``--root`` alone finds either layout::

    official release                              mmaction2 (tools/data/sthv2)
    ROOT/labels/                                  ROOT/annotations/
        something-something-v2-labels.json            (the same JSON files)
        something-something-v2-{train,validation,test}.json
        something-something-v2-test-answers.csv   (optional)
    ROOT/videos/20bn-something-something-v2/<id>.webm   ROOT/videos/<id>.webm (or .mp4)
      (or ROOT/20bn-something-something-v2/<id>.webm, as the archive unpacks)

``labels.json`` is ``{"Approaching something with your camera": "0", ...}``; a list entry is
``{"id": "78687", "label": "holding potato next to vicks vaporub bottle", "template": "Holding
[something] next to [something]", "placeholders": [...]}``; test entries are ``{"id": ...}``
only, and ``test-answers.csv`` holds ``id;class name`` lines. The short names of the newer
download (``labels.json``, ``train.json``, ...) are read as well. ``--annotations DIR`` names
the folder of the JSON files when it is elsewhere, ``--root`` then being where the videos are.
An entry's class is its ``template`` with the brackets removed ("Holding [something] next to
[something]" -> "Holding something next to something"), which is how the labels file names the
classes; ``label`` is the filled-in sentence and is not a class. Splits: train, validation ->
``val``, test. The test list is unlabelled without the answers file: it is then left out with
a warning, and asked for alone (``--split-file ...-test.json``) it is an error naming the file.
Clip ids are the SSv2 video ids; clips are whole videos.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepcli.errors import StepcliError
from stepcli.extract.datasets.annotations import (
    Layout,
    entry_fields,
    json_list,
    locate,
    read_json,
    restrict_classes,
    video_name,
)
from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions
from stepcli.extract.datasets.registry import register_dataset
from stepcli.files import read_text

log = logging.getLogger(__name__)
PREFIX = "something-something-v2-"
VIDEO_DIR = "20bn-something-something-v2"
SPLITS = {"train": "train", "validation": "val", "test": "test"}
ANSWERS = f"{PREFIX}test-answers.csv"
LAYOUTS = [
    Layout("official release", "labels", (f"videos/{VIDEO_DIR}", VIDEO_DIR, "videos")),
    Layout("mmaction2", "annotations", ("videos", f"videos/{VIDEO_DIR}")),
    Layout("flat", ".", (VIDEO_DIR, "videos", ".")),
]
KEY_FILES = [f"{PREFIX}labels.json", "labels.json"]


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{PREFIX}{name}", directory / name):
        if candidate.is_file():
            return candidate
    return None


def read_labels(path: Path) -> list[str]:
    """Class names in label-index order from the ``{"name": "index"}`` labels file."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise StepcliError(f"{path}: expected a JSON object {{class name: index}}")
    by_index: dict[int, str] = {}
    for name, value in data.items():
        if not name.strip() or isinstance(value, bool):
            raise StepcliError(f"{path}: entry {name!r}: {value!r} is not a class name and index")
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise StepcliError(f"{path}: entry {name!r}: index {value!r} is not an integer") from None
        if index in by_index:
            raise StepcliError(f"{path}: entry {name!r}: index {index} is also {by_index[index]!r}")
        by_index[index] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise StepcliError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def template_class(template: object, where: str) -> str:
    if not isinstance(template, str):
        raise StepcliError(f"{where}: template {template!r} is not a string")
    return template.replace("[", "").replace("]", "")


def _test_answers(path: Path) -> dict[str, str]:
    answers: dict[str, str] = {}
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        video_id, sep, name = line.partition(";")
        if not sep:
            raise StepcliError(f"{path}:{n}: expected 'id;class name'")
        answers[video_id.strip()] = name.strip()
    return answers


@dataclass(frozen=True)
class _Classes:
    """What an entry's class is checked against and mapped by.

    ``official``: every class of the labels file; ``index``: those kept by ``--classes``, with their
    class index; ``source``: the labels file, named when a class is not in it.
    """

    official: frozenset[str]
    index: dict[str, int]
    source: Path


def _read_classes(ann_dir: Path, options: DatasetOptions) -> tuple[_Classes, list[str]]:
    """The classes from the labels file, and the class names of the dataset in index order."""
    labels_file = _find(ann_dir, "labels.json")
    if labels_file is None:
        raise StepcliError(f"SSv2 labels file {ann_dir / (PREFIX + 'labels.json')} not found")
    official = read_labels(labels_file)
    class_names = restrict_classes(official, options.classes, str(labels_file))
    index = {name: i for i, name in enumerate(class_names)}
    return _Classes(frozenset(official), index, labels_file), class_names


def _list_files(options: DatasetOptions, ann_dir: Path) -> list[tuple[Path, str]]:
    """``(list file, split)``: the ``--split-file`` alone, else every official list file present."""
    if options.split_file is not None:
        return [(Path(options.split_file), _split_of_file(Path(options.split_file)))]
    lists = [(path, split) for name, split in SPLITS.items() if (path := _find(ann_dir, f"{name}.json"))]
    if not lists:
        raise StepcliError(f"no SSv2 list files ({PREFIX}train.json, ...) in {ann_dir}")
    return lists


def _entry_class(
    entry: Any, split: str, where: str, answers_file: Path | None, answers: dict[str, str] | None
) -> tuple[Any, str | None]:
    """``(video id, class name)`` of one list entry.

    The name is ``None`` for an unlabelled test entry when there is no answers file to label it.
    """
    if split == "test" and (not isinstance(entry, dict) or "template" not in entry):
        (video_id,) = entry_fields(entry, ["id"], where)
        if answers is None:
            return video_id, None
        name = answers.get(str(video_id))
        if name is None:
            raise StepcliError(f"{where} (id {video_id}): no answer in {answers_file}")
        return video_id, name
    video_id, template = entry_fields(entry, ["id", "template"], where)
    return video_id, template_class(template, f"{where} (id {video_id})")


def _list_clips(
    path: Path,
    split: str,
    classes: _Classes,
    video_dir: Path,
    answers_file: Path | None,
    answers: dict[str, str] | None,
) -> tuple[list[Clip], int]:
    """The clips of one list file, and how many unlabelled test entries it skipped."""
    clips: list[Clip] = []
    skipped = 0
    suffix = None
    for n, entry in enumerate(json_list(path)):
        where = f"{path}: entry {n}"
        video_id, name = _entry_class(entry, split, where, answers_file, answers)
        video_id = video_name(video_id, where, "id")
        if name is None:
            skipped += 1
            continue
        if name not in classes.official:
            raise StepcliError(f"{where} (id {video_id}): class {name!r} is not in {classes.source}")
        if name not in classes.index:
            continue  # left out by --classes
        suffix = suffix or _video_suffix(video_dir, str(video_id))
        video = str((video_dir / f"{video_id}{suffix}").resolve())
        clips.append(Clip(str(video_id), video, classes.index[name], split))
    return clips, skipped


def _video_suffix(video_dir: Path, video_id: str) -> str:
    """``.webm`` as released; ``.mp4`` when the first video is there only as that (re-encoded copies)."""
    try:
        mp4_only = not (video_dir / f"{video_id}.webm").exists() and (video_dir / f"{video_id}.mp4").exists()
    except (OSError, ValueError):  # an id no file can have (a NUL byte, too long): its clip fails later
        mp4_only = False
    return ".mp4" if mp4_only else ".webm"


def _unlabelled(path: Path, skipped: int, ann_dir: Path, alone: bool) -> None:
    """An unlabelled test list: an error when it is all that was asked for, else a warning."""
    what = f"{path}: its {skipped} test clips have no labels without {ANSWERS} (id;class name per line)"
    if alone:
        raise StepcliError(f"{what}; put that file from the SSv2 download in {ann_dir} and rerun")
    log.warning(f"WARNING: {what}; left out (put it in {ann_dir} to extract them)")


@register_dataset("ssv2")
def ssv2_dataset(options: DatasetOptions) -> Dataset:
    if options.root is None and options.annotations is None:
        raise StepcliError("--dataset ssv2 needs --root DIR (videos) and/or --annotations DIR (the label JSON files)")
    root = Path(options.root) if options.root else Path(options.annotations)
    annotations = Path(options.annotations) if options.annotations else None
    ann_dir, video_dir, layout = locate(root, annotations, LAYOUTS, KEY_FILES, "ssv2")
    classes, class_names = _read_classes(ann_dir, options)
    lists = _list_files(options, ann_dir)
    answers_file = _find(ann_dir, "test-answers.csv")
    answers = _test_answers(answers_file) if answers_file else None

    clips: list[Clip] = []
    skipped_test = 0
    for path, split in lists:
        found, skipped = _list_clips(path, split, classes, video_dir, answers_file, answers)
        if skipped:
            _unlabelled(path, skipped, ann_dir, alone=len(lists) == 1)
        clips += found
        skipped_test += skipped
    return Dataset(
        name="ssv2",
        clips=clips,
        class_names=class_names,
        official_classes=sorted(classes.official),
        source={
            "format": "something-something-v2",
            "layout": layout,
            "labels": str(classes.source.resolve()),
            "lists": [str(p.resolve()) for p, _ in lists],
            "videos": str(video_dir.resolve()),
            "unlabelled_test_skipped": skipped_test,
        },
    )


def _split_of_file(path: Path) -> str:
    stem = path.name.removeprefix(PREFIX).split(".")[0]
    return SPLITS.get(stem, "")
