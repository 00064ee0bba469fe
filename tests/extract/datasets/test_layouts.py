"""Datasets as they are downloaded: each release's layout (and mmaction2's, where it has one) is
found from ``--root`` alone, segment ends are read as the release writes them, and Drive&Act's
views are cut by time at their own frame rates.

The fixtures are the ones of test_datasets.py (the releases' own file structure, tiny PyAV
videos), moved into the other layouts the way one would unpack or prepare them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA, fails
from dataset_fixtures import (
    DRIVE_ACT_FILES,
    DRIVE_ACT_HEADER,
    KINECT_FPS,
    _avi,
    _json,
    _mp4,
    _write,
    centre_frames,
    diving48_fixture,
    drive_act_fixture,
    extract,
    ikea_fixture,
    ssv2_fixture,
)

from stepcli.cache.reader import FeatureCache
from stepcli.cli import cli
from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.datasets.pairs import DIVING48_CLASSES, DRIVE_ACT_CLASSES, table
from stepcli.extract.video import sample_clip


def _move(root: Path, moves: dict[str, str]) -> None:
    for old, new in moves.items():
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / old, root / new)


def ssv2_official_nested(root: Path):
    """The release as unpacked into ROOT/videos/: ROOT/labels + ROOT/videos/20bn-something-something-v2/."""
    _, expected, _ = ssv2_fixture(root)
    _move(root, {"20bn-something-something-v2": "videos/20bn-something-something-v2"})
    return expected


def ssv2_mmaction2(root: Path):
    """mmaction2's data/sthv2: annotations/ (the release's JSON files) and videos/<id>.webm."""
    _, expected, _ = ssv2_fixture(root)
    _move(root, {"labels": "annotations", "20bn-something-something-v2": "videos"})
    return expected


def diving48_mmaction2(root: Path):
    """mmaction2's data/diving48: annotations/Diving48_*.json and videos/<vid_name>.mp4."""
    _, expected, _ = diving48_fixture(root)
    names = ["Diving48_vocab.json", "Diving48_V2_train.json", "Diving48_V2_test.json"]
    _move(root, {**{n: f"annotations/{n}" for n in names}, "rgb": "videos"})
    return expected


def drive_act_zip_nesting(root: Path):
    """iccv_activities_3s.zip unpacked as is: ROOT/iccv_activities_3s/activities_3s/<view>/."""
    _, expected, _ = drive_act_fixture(root)
    _move(root, {"activities_3s": "iccv_activities_3s/activities_3s"})
    return expected


LAYOUTS = {
    ("ssv2", "official, videos/ nesting"): ssv2_official_nested,
    ("ssv2", "mmaction2"): ssv2_mmaction2,
    ("diving48", "official"): lambda r: diving48_fixture(r)[1],
    ("diving48", "mmaction2"): diving48_mmaction2,
    ("ikea-asm", "official"): lambda r: ikea_fixture(r)[1],
    ("drive-act", "official, zip nesting"): drive_act_zip_nesting,
}


@pytest.mark.parametrize("case", list(LAYOUTS), ids=[f"{d}-{name}" for d, name in LAYOUTS])
def test_layout_found_from_root_alone(case, tmp_path):
    dataset, _ = case
    root = tmp_path / "data"
    expected = LAYOUTS[case](root)
    code, stderr = extract(dataset, root, tmp_path / "cache")
    assert code == 0, stderr
    cache = FeatureCache(tmp_path / "cache")
    assert sorted(cache.clip_ids) == sorted(expected) and cache.failures() == []
    for row, clip_id in enumerate(cache.clip_ids):
        frame_index, _ = cache.timing(row)
        assert [int(i) for i in frame_index] == centre_frames(*expected[clip_id][2], num_frames=4)


@pytest.mark.parametrize("dataset", ["ssv2", "diving48", "ikea-asm", "drive-act"])
def test_no_known_layout_is_one_line_naming_where_and_the_flags(dataset, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    line = fails("extract", "--dataset", dataset, "--root", root, "--out", tmp_path / "cache")
    assert str(root) in line and "--annotations" in line, line
    assert not (tmp_path / "cache" / "shards").exists()


def test_ikea_segment_ends_are_inclusive(tmp_path):
    """``[58, 170]`` is frames 58 to 170: 113 frames, each decoded once when 113 are asked for."""
    scan = "Lack_TV_Bench/0007_white_floor_08_04_2019_08_28_10_47"
    _write(tmp_path / "indexing_files" / "atomic_action_list.txt", "pick up leg\nspin leg\n")
    segments = [{"segment": [0, 57], "label": "pick up leg"}, {"segment": [58, 170], "label": "spin leg"}]
    _json(tmp_path / "gt_segments.json", {"database": {scan: {"subset": "training", "annotation": segments}}})
    _avi(tmp_path / scan / "dev3" / "images" / "scan_video.avi", 171)
    first, second = load_dataset("ikea-asm", DatasetOptions(root=tmp_path)).clips
    assert (first.frame_range, second.frame_range) == ((0, 58), (58, 171))
    sampled = sample_clip(second.path, 113, frame_range=second.frame_range)
    assert [int(i) for i in sampled.frame_index] == list(range(58, 171))
    assert len(sample_clip(first.path, 58, frame_range=first.frame_range).frame_index) == 58


def test_exclude_classes_drops_na_and_the_manifest_says_so(tmp_path):
    root = tmp_path / "data"
    _, expected, _ = ikea_fixture(root)
    code, stderr = extract("ikea-asm", root, tmp_path / "cache", "--exclude-classes", "NA")
    assert code == 0, stderr
    cache = FeatureCache(tmp_path / "cache")
    assert "NA" not in cache.class_names and len(cache.class_names) == 3
    kept = {cid for cid, (name, _, _) in expected.items() if name != "NA"}
    assert set(cache.clip_ids) == kept
    assert {cache.class_names[label] for label in cache.labels} == {"pick up leg", "spin leg", "lay down leg"}
    assert cache.manifest.dataset.source["exclude_classes"] == ["NA"]
    line = fails(
        "extract", "--dataset", "ikea-asm", "--root", root, "--out", tmp_path / "c2", "--exclude-classes", "NB"
    )
    assert "--exclude-classes 'NB'" in line


def _two_views(root: Path, inner_mirror_frames: dict[str, int]) -> None:
    """The Kinect colour annotations and videos (15 fps), and the inner-mirror videos at 30 fps."""
    drive_act_fixture(root)
    for file_id, n in inner_mirror_frames.items():
        stem = file_id.rsplit(".", 1)[0]
        _mp4(root / "inner_mirror" / f"{stem}.inner_mirror.mp4", n, fps=2 * KINECT_FPS)


def test_drive_act_views_are_cut_by_time_at_their_own_frame_rate(tmp_path):
    """Kinect frames [a, b) at 15 fps are inner-mirror frames [2a, 2b) at 30 fps; a chunk past the
    end of its video is a failure with the reason."""
    root = tmp_path / "data"
    vp1, vp2, vp3 = DRIVE_ACT_FILES
    # twice the frames of each Kinect video, but vp1 stops after 3 s: its last chunk (2..3.33 s) is past it
    _two_views(root, {vp1: 90, vp2: 2 * DRIVE_ACT_FILES[vp2], vp3: 2 * DRIVE_ACT_FILES[vp3]})
    code, stderr = extract("drive-act", root, tmp_path / "ir", "--view", "inner_mirror")
    assert code == 1, stderr
    code, _ = extract("drive-act", root, tmp_path / "rgb", "--view", "kinect_color")
    assert code == 0
    ir, rgb = FeatureCache(tmp_path / "ir"), FeatureCache(tmp_path / "rgb")
    (failure,) = ir.failures()
    assert failure["clip_id"] == f"{vp1}:1:0" and failure["path"].endswith(".inner_mirror.mp4")
    assert "ends after the video's end at 3.000s" in failure["reason"]
    _, expected, _ = drive_act_fixture(tmp_path / "again")
    rgb_rows = {clip_id: row for row, clip_id in enumerate(rgb.clip_ids)}
    for row, clip_id in enumerate(ir.clip_ids):
        first, stop = expected[clip_id][2]
        frame_index, timestamps = ir.timing(row)
        assert [int(i) for i in frame_index] == centre_frames(2 * first, 2 * stop)
        np.testing.assert_allclose(timestamps, frame_index / (2 * KINECT_FPS), atol=2e-3)
        rgb_times = rgb.timing(rgb_rows[clip_id])[1]
        np.testing.assert_allclose(timestamps, rgb_times, atol=1 / KINECT_FPS)  # the same moments
    assert "WARNING: built-in drive-act pairs" in stderr and "'closing_bottle'" in stderr


def test_drive_act_view_names_the_views(tmp_path):
    drive_act_fixture(tmp_path)
    line = fails("extract", "--dataset", "drive-act", "--root", tmp_path, "--out", tmp_path / "c", "--view", "front")
    assert "'front'" in line and "kinect_color" in line and "inner_mirror" in line and "a_column_driver" in line


def test_drive_act_annotations_of_another_view_count_that_views_frames(tmp_path):
    """An inner_mirror annotation folder (30 fps frame numbers) is used for --view inner_mirror."""
    root = tmp_path / "data"
    vp1 = next(iter(DRIVE_ACT_FILES))
    stem = vp1.rsplit(".", 1)[0]
    _mp4(root / "inner_mirror" / f"{stem}.inner_mirror.mp4", 120, fps=2 * KINECT_FPS)
    ann = root / "activities_3s" / "inner_mirror"
    for part, row in (("train", "0,10,70,eating,0"), ("val", "1,70,110,drinking,0"), ("test", "")):
        line = f"1,{stem}.inner_mirror,{row}\n" if row else ""
        _write(ann / f"midlevel.chunks_90.split_0.{part}.csv", DRIVE_ACT_HEADER + line)
    clips = load_dataset("drive-act", DatasetOptions(root=root, view="inner_mirror")).clips
    assert [(c.start, c.end) for c in clips] == [(10 / 30, 70 / 30), (70 / 30, 110 / 30)]
    assert clips[0].path.endswith(f"inner_mirror/{stem}.inner_mirror.mp4")


# --- the built-in pairs against each dataset's real class list


def _real_classes(dataset: str) -> list[str]:
    lines = {
        "ssv2": (DATA / "ssv2_classes.txt").read_text().splitlines(),
        "ikea-asm": ["NA", *(DATA / "ikea_asm_atomic_action_list.txt").read_text().splitlines()],
        "diving48": DIVING48_CLASSES,
        "drive-act": DRIVE_ACT_CLASSES,
    }[dataset]
    return [line for line in lines if line]


@pytest.mark.parametrize(("dataset", "count"), [("ssv2", 174), ("diving48", 48), ("ikea-asm", 33), ("drive-act", 34)])
def test_builtin_pairs_name_real_classes(dataset, count):
    """Class lists as the releases write them (tests/data: SSv2's labels file, IKEA ASM's
    atomic_action_list.txt with NA; Drive&Act's 34 midlevel split activities)."""
    names = _real_classes(dataset)
    assert len(set(names)) == len(names) == count
    pairs = table(dataset)
    assert pairs and all(a in names and b in names for a, b in pairs), [p for p in pairs if not set(p) <= set(names)]


def test_pairs_command_prints_real_classes_and_warns_about_others(tmp_path):
    result = CliRunner().invoke(cli, ["pairs", "--dataset", "drive-act"])
    assert result.exit_code == 0 and "closing_backpack" not in result.output
    printed = [tuple(line.split(",")) for line in result.stdout.splitlines()]
    assert printed == table("drive-act") and all(set(p) <= set(DRIVE_ACT_CLASSES) for p in printed)
    classes = _write(tmp_path / "classes.txt", "\n".join(c for c in DRIVE_ACT_CLASSES if c != "closing_bottle"))
    result = CliRunner().invoke(cli, ["pairs", "--dataset", "drive-act", "--classes", str(classes)])
    assert "'closing_bottle'" in result.stderr and "WARNING" in result.stderr
    assert "closing_bottle" not in result.stdout


def test_unlabelled_ssv2_test_split(tmp_path, capsys):
    """Asked for alone it is one line naming the answers file; with everything else it is left out
    with a warning; with the answers file it is read."""
    root = tmp_path / "data"
    ssv2_fixture(root)
    test_list = root / "labels" / "something-something-v2-test.json"
    line = fails("extract", "--dataset", "ssv2", "--root", root, "--split-file", test_list, "--out", tmp_path / "c")
    assert "something-something-v2-test-answers.csv" in line and str(root / "labels") in line
    assert not (tmp_path / "c" / "shards").exists()
    ids = {c.clip_id for c in load_dataset("ssv2", DatasetOptions(root=root)).clips}
    assert "301" not in ids and len(ids) == 5
    assert "something-something-v2-test-answers.csv" in capsys.readouterr().err
    _write(root / "labels" / "something-something-v2-test-answers.csv", "301;Opening something\n")
    (clip,) = load_dataset("ssv2", DatasetOptions(root=root, split_file=test_list)).clips
    assert (clip.clip_id, clip.split, clip.label) == ("301", "test", 0)
