"""Segments of long videos decode only what they need: a seek to the keyframe before the segment,
then at most a GOP or two, not the minutes before it.

The check is on the number of decoded frames, not on time, so it holds on a loaded machine.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stepcli.extract.datasets import DatasetOptions, load_dataset
from stepcli.extract.video import frame_times, sample_clip

FPS = 10
MINUTES = 3
GOP = 50  # a keyframe every 5 s
NUM_FRAMES = MINUTES * 60 * FPS


def _code(k: int) -> np.ndarray:
    """Frame k's colour: its index in two coarse channels, so lossless decoding reads it back."""
    return np.array([(k % 64) * 4, (k // 64) * 8, 128], np.uint8)


def _index_of(frame: np.ndarray) -> int:
    r, g = (int(v) for v in frame[0, 0, :2])
    return round(g / 8) * 64 + round(r / 4)


def write_long_video(path: Path, num_frames: int = NUM_FRAMES, gop: int = GOP) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p"
        stream.codec_context.gop_size = gop
        stream.options = {"qp": "0", "preset": "ultrafast", "keyint_min": str(gop), "sc_threshold": "0"}
        for k in range(num_frames):
            array = np.broadcast_to(_code(k), (32, 32, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_long_video(path)
    return path


def test_fixture_is_minutes_long_with_regular_keyframes(long_video):
    times, end = frame_times(long_video)
    assert len(times) == NUM_FRAMES and end == pytest.approx(MINUTES * 60)
    with av.open(str(long_video)) as container:
        stream = container.streams.video[0]
        keyframes = [round(float(p.pts * stream.time_base) * FPS) for p in container.demux(stream) if p.is_keyframe]
    assert keyframes[:3] == [0, GOP, 2 * GOP] and len(keyframes) == NUM_FRAMES // GOP


@pytest.mark.parametrize(
    "segment",
    [
        {"frame_range": (1650, 1690)},  # starts on a keyframe
        {"frame_range": (1737, 1790)},  # starts mid-GOP, ends near the end of the video
        {"start": 171.3, "end": 176.0},  # seconds, as the csv adapter gives them
    ],
)
def test_segment_in_last_tenth_decodes_a_few_gops(long_video, segment):
    sampled = sample_clip(long_video, 8, **segment)
    if "frame_range" in segment:
        first, stop = segment["frame_range"]
    else:
        first, stop = round(segment["start"] * FPS), round(segment["end"] * FPS)
    assert first >= 0.9 * NUM_FRAMES
    # from the keyframe at or before the segment to just past its last sampled frame
    assert sampled.decoded <= (first % GOP) + (stop - first) + 1
    assert sampled.decoded <= 2 * GOP
    # and the frames are the right ones: what is on screen at each part's centre
    expected = [int(np.floor(first + (stop - first) * (k + 0.5) / 8 + 1e-6)) for k in range(8)]
    assert [_index_of(f) for f in sampled.frames] == expected
    np.testing.assert_array_equal(sampled.frame_index, expected)


def test_whole_video_decodes_from_the_start_for_contrast(tmp_path):
    path = tmp_path / "short.mp4"
    write_long_video(path, num_frames=300)
    sampled = sample_clip(path, 8)
    assert sampled.decoded >= sampled.frame_index[-1] + 1


def test_adapter_segment_reaches_the_decoder_as_a_seek(long_video, tmp_path):
    """A Drive&Act chunk near the end of a long recording, through the adapter's Clip.

    The chunk's frames count the 15 fps Kinect colour stream; this video runs at 10 fps, so the
    chunk is cut by time: Kinect frames 1700..1790 are seconds 113.3..119.3."""
    file_id = "vp1/run1b_2018-05-29-14-02-47.kinect_color"
    video = tmp_path / "kinect_color" / f"{file_id}.mp4"
    video.parent.mkdir(parents=True)
    video.symlink_to(long_video)
    annotations = tmp_path / "activities_3s" / "kinect_color"
    annotations.mkdir(parents=True)
    header = "participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id\n"
    for part, row in (("train", "7,1700,1790,closing_door_outside,3"), ("val", "0,0,90,entering_car,0")):
        (annotations / f"midlevel.chunks_90.split_0.{part}.csv").write_text(f"{header}1,{file_id},{row}\n")
    (annotations / "midlevel.chunks_90.split_0.test.csv").write_text(header)
    (clip, _) = load_dataset("drive-act", DatasetOptions(root=tmp_path)).clips
    assert (clip.start, clip.end) == (pytest.approx(1700 / 15), pytest.approx(1790 / 15))
    sampled = sample_clip(clip.path, 8, clip.start, clip.end, clip.frame_range)
    assert sampled.decoded <= 2 * GOP
    first_centre = (1700 + 90 / 16) / 15  # seconds
    assert _index_of(sampled.frames[0]) == int(first_centre * FPS)
