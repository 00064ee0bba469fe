"""Builders of small dataset fixtures in each release's official layout (real videos written with
PyAV, real annotation files), shared by the dataset adapter and layout tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import av
import numpy as np
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE

from stepcli.cli import cli
from stepcli.extract.video import write_video

T = 4  # frames per clip
FPS = 10


def _frames(n: int) -> np.ndarray:
    return np.stack([np.full((32, 32, 3), (9 * k) % 256, np.uint8) for k in range(n)])


def _mp4(path: Path, n: int, fps: int = FPS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, _frames(n), fps=fps)


def _encode(path: Path, n: int, codec: str, pix_fmt: str, options: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = pix_fmt
        stream.options = options
        for array in _frames(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _webm(path: Path, n: int) -> None:  # SSv2 ships VP9 in WebM
    _encode(path, n, "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8"})


def _avi(path: Path, n: int) -> None:  # IKEA ASM ships AVI; MPEG-4 part 2 as in XviD
    _encode(path, n, "mpeg4", "yuv420p", {})


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _json(path: Path, data) -> Path:
    return _write(path, json.dumps(data, indent=1))


def centre_frames(first: int, stop: int, num_frames: int = T) -> list[int]:
    """The frames on screen at the centres of ``num_frames`` equal parts of frames ``[first, stop)``."""
    return [int(np.floor(first + (stop - first) * (k + 0.5) / num_frames + 1e-9)) for k in range(num_frames)]


# --- fixtures in each dataset's own layout: (stepcli extract options, expected clips, expected pairs)
# expected clips: {clip_id: (class name, split, (first frame, end frame exclusive))}


def csv_fixture(tmp: Path):
    _mp4(tmp / "videos" / "a.mp4", 30)
    _mp4(tmp / "videos" / "b.mp4", 20)
    ann = _write(
        tmp / "list.csv",
        "path,label,start,end,split\nvideos/a.mp4,open,,,train\nvideos/a.mp4,close,1.0,2.5,val\n"
        "videos/b.mp4,open,0.5,1.5,test\n",
    )
    pairs = _write(tmp / "pairs.txt", "# the demo's own\nopen,close\n")
    args = ["--annotations", ann, "--pairs", pairs]
    expected = {
        "videos/a.mp4": ("open", "train", (0, 30)),
        "videos/a.mp4@1-2.5": ("close", "val", (10, 25)),
        "videos/b.mp4@0.5-1.5": ("open", "test", (5, 15)),
    }
    return args, expected, [("open", "close")]


SSV2_LABELS = {
    "Opening something": "0",
    "Closing something": "1",
    "Pushing something from left to right": "2",
    "Pushing something from right to left": "3",
    "Putting something, something and something on the table": "4",
}


class SSv2Entry(TypedDict):
    """One entry of something-something-v2-{train,validation}.json (test entries have only ``id``)."""

    id: str  # the video's number, as a string: "78687"
    label: str  # the template filled in, lower case: "holding potato next to vicks vaporub bottle"
    template: str  # the class with brackets: "Holding [something] next to [something]"
    placeholders: list[str]  # what fills each bracket: ["potato", "vicks vaporub bottle"]


class Diving48Entry(TypedDict):
    """One entry of Diving48_V2_{train,test}.json."""

    vid_name: str  # "-mmq0PT-u8k_00155": a YouTube id and the dive's number
    label: int  # index into Diving48_vocab.json
    start_frame: int
    end_frame: int


class IkeaSegment(TypedDict):
    """One entry of a scan's ``annotation`` list in gt_segments.json (ActivityNet style)."""

    segment: list[int]  # [start_frame, end_frame], both inclusive
    label: str  # an atomic action of atomic_action_list.txt, or "NA"


class IkeaScan(TypedDict):
    """One value of gt_segments.json's ``database``, keyed "<Furniture>/<scan>"."""

    subset: str  # "training" or "testing"
    annotation: list[IkeaSegment]


def _ssv2_entry(video_id: str, template: str) -> SSv2Entry:
    objects = [f"object {k}" for k in range(template.count("[something]"))]
    filled = template
    for name in objects:
        filled = filled.replace("[something]", name, 1)
    return {"id": video_id, "label": filled.lower(), "template": template, "placeholders": objects}


def ssv2_fixture(tmp: Path):
    labels = tmp / "labels"
    _json(labels / "something-something-v2-labels.json", SSV2_LABELS)
    train: list[SSv2Entry] = [
        _ssv2_entry("101", "Opening [something]"),
        _ssv2_entry("102", "Pushing [something] from left to right"),
        _ssv2_entry("103", "Putting [something], [something] and [something] on the table"),
    ]
    val = [_ssv2_entry("201", "Closing [something]"), _ssv2_entry("202", "Pushing [something] from right to left")]
    _json(labels / "something-something-v2-train.json", train)
    _json(labels / "something-something-v2-validation.json", val)
    _json(labels / "something-something-v2-test.json", [{"id": "301"}])
    lengths = {"101": 12, "102": 16, "103": 20, "201": 14, "202": 18, "301": 10}
    for video_id, n in lengths.items():
        _webm(tmp / "20bn-something-something-v2" / f"{video_id}.webm", n)
    expected = {
        "101": ("Opening something", "train", (0, 12)),
        "102": ("Pushing something from left to right", "train", (0, 16)),
        "103": ("Putting something, something and something on the table", "train", (0, 20)),
        "201": ("Closing something", "val", (0, 14)),
        "202": ("Pushing something from right to left", "val", (0, 18)),
    }
    pairs = [
        ("Opening something", "Closing something"),
        ("Pushing something from left to right", "Pushing something from right to left"),
    ]
    return [], expected, pairs


DIVING48_VOCAB = [
    ["Forward", "15som", "NoTwis", "PIKE"],
    ["Reverse", "15som", "NoTwis", "PIKE"],
    ["Back", "Dive", "NoTwis", "TUCK"],
]


def diving48_fixture(tmp: Path):
    _json(tmp / "Diving48_vocab.json", DIVING48_VOCAB)
    train: list[Diving48Entry] = [
        {"vid_name": "abc_00001", "label": 0, "start_frame": 0, "end_frame": 24},
        {"vid_name": "abc_00002", "label": 1, "start_frame": 2, "end_frame": 18},
    ]
    test: list[Diving48Entry] = [{"vid_name": "xyz_00000", "label": 2, "start_frame": 0, "end_frame": 16}]
    _json(tmp / "Diving48_V2_train.json", train)
    _json(tmp / "Diving48_V2_test.json", test)
    for vid_name, n in (("abc_00001", 24), ("abc_00002", 20), ("xyz_00000", 16)):
        _mp4(tmp / "rgb" / f"{vid_name}.mp4", n)
    expected = {
        "abc_00001@0-24": ("Forward 15som NoTwis PIKE", "train", (0, 24)),
        "abc_00002@2-18": ("Reverse 15som NoTwis PIKE", "train", (2, 18)),
        "xyz_00000@0-16": ("Back Dive NoTwis TUCK", "test", (0, 16)),
    }
    return [], expected, [("Forward 15som NoTwis PIKE", "Reverse 15som NoTwis PIKE")]


IKEA_SCANS = {"Lack_Side_Table/0001_black_table_02_01_2019_08_16_14_00": 40, "Lack_Side_Table/0002_white_floor": 30}


def ikea_fixture(tmp: Path):
    first, second = IKEA_SCANS
    index = tmp / "indexing_files"
    _write(index / "atomic_action_list.txt", "pick up leg\nspin leg\nlay down leg\n")
    _write(index / "train_cross_env.txt", f"{first}\n")
    _write(index / "test_cross_env.txt", f"{second}\n")
    database: dict[str, IkeaScan] = {
        first: {
            "subset": "training",
            "annotation": [  # inclusive ends, as the release writes them
                {"segment": [0, 11], "label": "pick up leg"},
                {"segment": [12, 29], "label": "spin leg"},
                {"segment": [30, 39], "label": "lay down leg"},
            ],
        },
        second: {"subset": "testing", "annotation": [{"segment": [5, 24], "label": "NA"}]},
    }
    _json(tmp / "gt_segments.json", {"version": "1.0", "database": database})  # frame numbers, 0-based
    for scan, n in IKEA_SCANS.items():
        for view in ("dev1", "dev3"):
            _avi(tmp / scan / view / "images" / "scan_video.avi", n)
    expected = {
        f"{first}/dev3#0": ("pick up leg", "train", (0, 12)),
        f"{first}/dev3#1": ("spin leg", "train", (12, 30)),
        f"{first}/dev3#2": ("lay down leg", "train", (30, 40)),
        f"{second}/dev3#0": ("NA", "test", (5, 25)),
    }
    return [], expected, [("pick up leg", "lay down leg")]


DRIVE_ACT_HEADER = "participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id\n"
KINECT_FPS = 15  # the Kinect colour stream's rate, which the kinect_color annotation frames count
DRIVE_ACT_FILES = {
    "vp1/run1b_2018-05-29-14-02-47.kinect_color": 60,
    "vp2/run1_2018-05-30-10-00-00.kinect_color": 30,
    "vp3/run2_2018-05-31-10-00-00.kinect_color": 45,
}


def drive_act_fixture(tmp: Path, split: int = 0):
    vp1, vp2, vp3 = DRIVE_ACT_FILES
    ann = tmp / "activities_3s" / "kinect_color"
    parts = {
        "train": [
            f"1,{vp1},0,0,20,opening_door_outside,0",
            f"1,{vp1},0,20,30,opening_door_outside,1",
            f"1,{vp1},1,30,50,closing_door_outside,0",
        ],
        "val": [f"2,{vp2},0,4,24,fastening_seat_belt,0"],
        "test": [f"3,{vp3},0,10,40,unfastening_seat_belt,0"],
    }
    for part, rows in parts.items():
        _write(ann / f"midlevel.chunks_90.split_{split}.{part}.csv", DRIVE_ACT_HEADER + "\n".join(rows) + "\n")
    for file_id, n in DRIVE_ACT_FILES.items():
        _mp4(tmp / "kinect_color" / f"{file_id}.mp4", n, fps=KINECT_FPS)
    expected = {
        f"{vp1}:0:0": ("opening_door_outside", "train", (0, 20)),
        f"{vp1}:0:1": ("opening_door_outside", "train", (20, 30)),
        f"{vp1}:1:0": ("closing_door_outside", "train", (30, 50)),
        f"{vp2}:0:0": ("fastening_seat_belt", "val", (4, 24)),
        f"{vp3}:0:0": ("unfastening_seat_belt", "test", (10, 40)),
    }
    pairs = [("opening_door_outside", "closing_door_outside"), ("fastening_seat_belt", "unfastening_seat_belt")]
    return [], expected, pairs


FIXTURE_FPS = {"drive-act": KINECT_FPS}


FIXTURES = {
    "csv": csv_fixture,
    "ssv2": ssv2_fixture,
    "diving48": diving48_fixture,
    "ikea-asm": ikea_fixture,
    "drive-act": drive_act_fixture,
}


def run_cli(args: list) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def extract(dataset: str, root: Path, out: Path, *args) -> tuple[int, str]:
    return run_cli(
        ["extract", "--dataset", dataset, "--root", root, "--out", out, *args]
        + ["--backbone", TINY_BACKBONE, "--image-size", TINY_IMAGE_SIZE, "--frames", T, "--workers", 0]
        + ["--batch-size", 4, "--quiet"]
    )
