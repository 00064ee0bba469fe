"""Every dataset adapter on a small fixture in the dataset's official layout, through `stepcli extract`.

Each fixture is a handful of short synthetic videos (32x32, 10 fps) and the annotation files in
the layout the dataset ships; the test reads the resulting cache and checks the clip ids,
classes, splits, pairs and, through the cached frame indices, the segment boundaries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dataset_fixtures import (
    DRIVE_ACT_FILES,
    DRIVE_ACT_HEADER,
    FIXTURE_FPS,
    FIXTURES,
    FPS,
    IKEA_SCANS,
    SSV2_LABELS,
    _write,
    centre_frames,
    drive_act_fixture,
    extract,
    ikea_fixture,
    run_cli,
    ssv2_fixture,
)

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.extract.datasets import DatasetOptions, load_dataset


@pytest.mark.parametrize("dataset", list(FIXTURES))
def test_extract_official_layout(dataset, tmp_path):
    root = tmp_path / "data"
    args, expected, pairs = FIXTURES[dataset](root)
    code, stderr = extract(dataset, root, tmp_path / "cache", *args)
    assert code == 0, stderr
    cache = FeatureCache(tmp_path / "cache")
    got = {}
    for row, clip_id in enumerate(cache.clip_ids):
        frame_index, timestamps = cache.timing(row)
        np.testing.assert_allclose(timestamps, frame_index / FIXTURE_FPS.get(dataset, FPS), atol=2e-3)
        got[clip_id] = (cache.class_names[cache.labels[row]], cache.splits[row], [int(i) for i in frame_index])
    want = {cid: (name, split, centre_frames(*bounds)) for cid, (name, split, bounds) in expected.items()}
    assert got == want
    assert cache.manifest.pairs == pairs
    assert list(cache.manifest.dataset.splits) == sorted({split for _, split, _ in expected.values()})
    assert cache.failures() == []


# --- options: --classes, --view, --split-file, --limit, test answers


def _load(dataset: str, root: Path, **options):
    return load_dataset(dataset, DatasetOptions(root=root, **options))


def test_classes_restrict_in_file_order(tmp_path):
    ssv2_fixture(tmp_path)
    classes = _write(tmp_path / "classes.txt", "Closing something\nOpening something\n")
    dataset = _load("ssv2", tmp_path, classes=classes)
    assert dataset.class_names == ["Closing something", "Opening something"]
    assert {(c.clip_id, c.label) for c in dataset.clips} == {("201", 0), ("101", 1)}
    assert dataset.pairs == [("Opening something", "Closing something")]


def test_ssv2_test_split_with_answers(tmp_path):
    ssv2_fixture(tmp_path)
    _write(tmp_path / "labels" / "something-something-v2-test-answers.csv", "301;Closing something\n")
    clips = {c.clip_id: c for c in _load("ssv2", tmp_path).clips}
    assert (clips["301"].split, clips["301"].label) == ("test", 1)


def test_ikea_view_and_split_file(tmp_path):
    ikea_fixture(tmp_path)
    dataset = _load("ikea-asm", tmp_path, view="dev1")
    assert all("/dev1/images/scan_video.avi" in c.path and "/dev1#" in c.clip_id for c in dataset.clips)
    # another split: everything in the test list
    first, second = IKEA_SCANS
    _write(tmp_path / "splits" / "train_other.txt", "\n")
    _write(tmp_path / "splits" / "test_other.txt", f"{first}\n{second}\n")
    dataset = _load("ikea-asm", tmp_path, split_file=tmp_path / "splits" / "train_other.txt")
    assert {c.split for c in dataset.clips} == {"test"}


def test_drive_act_split_choice(tmp_path):
    drive_act_fixture(tmp_path, split=0)
    # split 1: the same videos with the persons in other parts
    ann = tmp_path / "activities_3s" / "kinect_color"
    vp1, vp2, vp3 = DRIVE_ACT_FILES
    for part, row in (("train", f"3,{vp3},0,10,40,unfastening_seat_belt,0"), ("val", f"2,{vp2},0,4,24,eating,0")):
        _write(ann / f"midlevel.chunks_90.split_1.{part}.csv", DRIVE_ACT_HEADER + row + "\n")
    _write(ann / "midlevel.chunks_90.split_1.test.csv", DRIVE_ACT_HEADER + f"1,{vp1},1,30,50,closing_door_outside,0\n")
    for choice in ("1", ann / "midlevel.chunks_90.split_1.val.csv"):
        dataset = _load("drive-act", tmp_path, split_file=Path(choice))
        assert {c.clip_id: c.split for c in dataset.clips} == {
            f"{vp3}:0:0": "train",
            f"{vp2}:0:0": "val",
            f"{vp1}:1:0": "test",
        }
        assert dataset.class_names == ["closing_door_outside", "eating", "unfastening_seat_belt"]
    assert len(_load("drive-act", tmp_path, limit=2).clips) == 2


def test_pairs_command(tmp_path):
    code, _ = run_cli(["pairs", "--dataset", "ikea-asm"])
    assert code == 0
    result = CliRunner().invoke(cli, ["pairs", "--dataset", "ssv2"])
    lines = result.stdout.splitlines()
    assert "Opening something,Closing something" in lines
    assert "Pushing something from left to right,Pushing something from right to left" in lines
    classes = _write(tmp_path / "classes.txt", "pick up leg\nlay down leg\nspin leg\n")
    result = CliRunner().invoke(cli, ["pairs", "--dataset", "ikea-asm", "--classes", str(classes), "--json"])
    assert json.loads(result.stdout) == [["pick up leg", "lay down leg"]]
    # what it prints is what --pairs reads
    printed = _write(tmp_path / "pairs.txt", CliRunner().invoke(cli, ["pairs", "--dataset", "ssv2"]).stdout)
    ssv2_fixture(tmp_path / "ssv2")
    names = list(SSV2_LABELS)
    from stepcli.pairs import read_pairs

    commas = _write(tmp_path / "commas.txt", f"{names[4]},{names[0]}\n")
    assert read_pairs(commas, names) == [(names[4], names[0])]
    with pytest.raises(Exception, match="is not in the dataset's class list"):
        read_pairs(printed, names)  # the full SSv2 table names classes the fixture lacks


# --- malformed annotations: one line, naming the file and the line or entry


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def _ssv2_list(root: Path) -> Path:
    return root / "labels" / "something-something-v2-train.json"


def _drive_act_train(root: Path) -> Path:
    return root / "activities_3s" / "kinect_color" / "midlevel.chunks_90.split_0.train.csv"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


MALFORMED = {
    # name: (dataset, break the fixture, file named in the error, where in it)
    "csv missing column": ("csv", lambda r: _replace(r / "list.csv", "path,label", "file,label"), "list.csv", "path"),
    "drive-act missing column": (
        "drive-act",
        lambda r: _replace(_drive_act_train(r), "frame_end,", "frame_stop,"),
        "split_0.train.csv:1",
        "frame_end",
    ),
    "ssv2 bad json": (
        "ssv2",
        lambda r: _replace(_ssv2_list(r), '"id": "102"', '"id": "102",,'),
        "something-something-v2-train.json:",
        "not valid JSON",
    ),
    "diving48 bad json": (
        "diving48",
        lambda r: (r / "Diving48_vocab.json").write_text('[["Back", "Dive"'),
        "Diving48_vocab.json:1",
        "not valid JSON",
    ),
    "ssv2 missing key": (
        "ssv2",
        lambda r: _edit_json(_ssv2_list(r), lambda d: d[1].pop("template")),
        "something-something-v2-train.json: entry 1",
        "'template'",
    ),
    "ssv2 unknown label": (
        "ssv2",
        lambda r: _edit_json(_ssv2_list(r), lambda d: d[2].update(template="Juggling [something]")),
        "something-something-v2-train.json: entry 2 (id 103)",
        "'Juggling something' is not in",
    ),
    "diving48 unknown label": (
        "diving48",
        lambda r: _edit_json(r / "Diving48_V2_test.json", lambda d: d[0].update(label=48)),
        "Diving48_V2_test.json: entry 0 (xyz_00000)",
        "label 48",
    ),
    "ikea unknown label": (
        "ikea-asm",
        lambda r: _edit_json(
            r / "gt_segments.json", lambda d: d["database"][list(IKEA_SCANS)[0]]["annotation"][1].update(label="juggle")
        ),
        "gt_segments.json: database['Lack_Side_Table/0001_black_table_02_01_2019_08_16_14_00'].annotation[1]",
        "'juggle' is not in",
    ),
    "diving48 end before start": (
        "diving48",
        lambda r: _edit_json(r / "Diving48_V2_train.json", lambda d: d[1].update(end_frame=2)),
        "Diving48_V2_train.json: entry 1 (abc_00002)",
        "end_frame 2 is not after start_frame 2",
    ),
    "ikea end before start": (
        "ikea-asm",
        lambda r: _edit_json(
            r / "gt_segments.json",
            lambda d: d["database"][list(IKEA_SCANS)[1]]["annotation"][0].update(segment=[25, 24]),
        ),
        "gt_segments.json: database['Lack_Side_Table/0002_white_floor'].annotation[0]",
        "end_frame 24 is before start_frame 25",
    ),
    "drive-act end before start": (
        "drive-act",
        lambda r: _replace(_drive_act_train(r), ",20,30,", ",30,20,"),
        "split_0.train.csv:3",
        "frame_end 20 is not after frame_start 30",
    ),
    "csv end before start": (
        "csv",
        lambda r: _replace(r / "list.csv", "1.0,2.5", "2.5,1.0"),
        "list.csv:3",
        "is not after start",
    ),
    "classes file names an unknown class": (
        "ikea-asm",
        lambda r: _write(r / "classes.txt", "pick up leg\npick up tabel\n"),
        "classes.txt:2",
        "'pick up tabel' is not in",
    ),
    "pairs file names an unknown class": (
        "diving48",
        lambda r: _write(
            r / "pairs.txt", "Forward 15som NoTwis PIKE,Reverse 15som NoTwis PIKE\nBack Dive NoTwis TUCK,x\n"
        ),
        "pairs.txt:2",
        "'x' is not in the dataset's class list",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_annotations_give_one_line(case, tmp_path):
    dataset, breakage, where, what = MALFORMED[case]
    root = tmp_path / "data"
    args, _, _ = FIXTURES[dataset](root)
    breakage(root)
    if (root / "classes.txt").exists():
        args = [*args, "--classes", root / "classes.txt"]
    if (root / "pairs.txt").exists() and dataset != "csv":
        args = [*args, "--pairs", root / "pairs.txt"]
    code, stderr = extract(dataset, root, tmp_path / "cache", *args)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and where in lines[0] and what in lines[0], lines[0]
    assert not (tmp_path / "cache" / "shards").exists()


def test_frame_range_beyond_the_video_is_a_clip_failure(tmp_path):
    root = tmp_path / "data"
    drive_act_fixture(root)
    vp1 = next(iter(DRIVE_ACT_FILES))
    _replace(_drive_act_train(root), f"1,{vp1},1,30,50,", f"1,{vp1},1,30,61,")  # the video has 60 frames
    code, _ = extract("drive-act", root, tmp_path / "cache", "--limit", 3)
    assert code == 1
    cache = FeatureCache(tmp_path / "cache")
    assert sorted(cache.clip_ids) == [f"{vp1}:0:0", f"{vp1}:0:1"]
    (failure,) = cache.failures()
    assert failure["clip_id"] == f"{vp1}:1:0"
    assert failure["path"].endswith(f"kinect_color/{vp1}.mp4")
    assert "ends after the video's end at 4.000s" in failure["reason"]
