"""``--dataset diving48``: Diving48, V2 annotations, as released or as mmaction2 prepares it.

Reads the V2 annotation release (``Diving48_V2_train.json`` / ``Diving48_V2_test.json``, the
relabelled version published in 2020 that replaces V1's noisy labels) and the 48-class
vocabulary, with the videos of ``Diving48_rgb.tar.gz``. ``--root`` alone finds either layout::

    official release                    mmaction2 (tools/data/diving48)
    ROOT/Diving48_vocab.json            ROOT/annotations/Diving48_vocab.json
    ROOT/Diving48_V2_{train,test}.json  ROOT/annotations/Diving48_V2_{train,test}.json
    ROOT/rgb/<vid_name>.mp4             ROOT/videos/<vid_name>.mp4

``Diving48_vocab.json`` is ``[["Back", "15som", "05Twis", "FREE"], ...]`` (48 entries); a list
entry is ``{"vid_name": "-mmq0PT-u8k_00155", "label": 12, "start_frame": 0, "end_frame": 184}``.
``--annotations DIR`` names the folder of the JSON files when it is elsewhere.

A class is named by its four vocabulary words joined with spaces ("Back 15som 05Twis FREE":
take-off, somersaults, twists, flight position); ``label`` indexes the vocabulary. The videos
are trimmed dives, so ``[start_frame, end_frame)`` is read as a frame range of the clip's own
video with the end exclusive (``end_frame`` is the clip's frame count when ``start_frame`` is 0,
as in the reference TSM/mmaction preprocessing). Splits: train, test (Diving48 has no
validation split). ``--split-file`` reads one list file (e.g. V1 ``Diving48_train.json``)
instead of both V2 files. Clip ids are ``<vid_name>@<start_frame>-<end_frame>``.
"""

from __future__ import annotations

from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.extract.datasets.annotations import (
    Layout,
    entry_fields,
    frame_range,
    json_list,
    locate,
    read_json,
    restrict_classes,
    video_name,
)
from stepcli.extract.datasets.base import Clip, Dataset, DatasetOptions
from stepcli.extract.datasets.registry import register_dataset

VOCAB = "Diving48_vocab.json"
LISTS = {"train": "Diving48_V2_train.json", "test": "Diving48_V2_test.json"}
LAYOUTS = [
    Layout("official release", ".", ("rgb", ".")),
    Layout("mmaction2", "annotations", ("videos", "rgb")),
]


def read_vocab(path: Path) -> list[str]:
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise StepcliError(f"{path}: expected a JSON list of [take-off, somersaults, twists, position] entries")
    names = []
    for n, words in enumerate(data):
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise StepcliError(f"{path}: entry {n}: expected a list of words, found {words!r}")
        names.append(" ".join(words))
    if len(set(names)) != len(names):
        raise StepcliError(f"{path}: two entries name the same class")
    return names


@register_dataset("diving48")
def diving48_dataset(options: DatasetOptions) -> Dataset:
    if options.root is None and options.annotations is None:
        raise StepcliError("--dataset diving48 needs --root DIR (videos) and/or --annotations DIR (the JSON files)")
    root = Path(options.root) if options.root else Path(options.annotations)
    annotations = Path(options.annotations) if options.annotations else None
    ann_dir, video_dir, layout = locate(root, annotations, LAYOUTS, [VOCAB], "diving48")
    vocab_file = ann_dir / VOCAB
    if not vocab_file.is_file():
        raise StepcliError(f"Diving48 vocabulary {vocab_file} not found")
    official = read_vocab(vocab_file)
    class_names = restrict_classes(official, options.classes, str(vocab_file))
    index = {name: i for i, name in enumerate(class_names)}

    if options.split_file is not None:
        path = Path(options.split_file)
        lists = [(path, next((s for s in ("train", "test") if s in path.name.lower()), ""))]
    else:
        lists = [(ann_dir / name, split) for split, name in LISTS.items()]
        missing = [str(p) for p, _ in lists if not p.is_file()]
        if missing:
            raise StepcliError(f"Diving48 annotation file {missing[0]} not found")

    clips: list[Clip] = []
    seen: dict[str, str] = {}
    for path, split in lists:
        for n, entry in enumerate(json_list(path)):
            where = f"{path}: entry {n}"
            vid_name, label, start, end = entry_fields(entry, ["vid_name", "label", "start_frame", "end_frame"], where)
            vid_name = video_name(vid_name, where, "vid_name")
            where = f"{where} ({vid_name})"
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(official):
                raise StepcliError(
                    f"{where}: label {label!r} is not a class index 0..{len(official) - 1} of {vocab_file}"
                )
            first, stop = frame_range(start, end, where, ("start_frame", "end_frame"))
            clip_id = f"{vid_name}@{first}-{stop}"
            if clip_id in seen:
                raise StepcliError(f"{where}: clip {clip_id!r} is listed twice (also {seen[clip_id]})")
            seen[clip_id] = where
            name = official[label]
            if name not in index:
                continue  # left out by --classes
            video = str((video_dir / f"{vid_name}.mp4").resolve())
            clips.append(Clip(clip_id, video, index[name], split, frame_range=(first, stop)))
    return Dataset(
        name="diving48",
        clips=clips,
        class_names=class_names,
        official_classes=official,
        source={
            "format": "diving48-v2",
            "layout": layout,
            "vocab": str(vocab_file.resolve()),
            "lists": [str(p.resolve()) for p, _ in lists],
            "videos": str(video_dir.resolve()),
        },
    )
