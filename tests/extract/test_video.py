"""Decoding and timestamp sampling on real files written with PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from stepcli.extract.demo import FRAMES_PER_SEGMENT, generate_demo
from stepcli.extract.video import VideoError, frame_times, sample_clip, segment_centres, write_video


def _decode_all(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_demo_pair_is_exact_time_reversal(tmp_path):
    clips = generate_demo(tmp_path, clips_per_class=2, num_frames=8, seed=3, size=48)
    by_id = {c.clip_id: c for c in clips}
    forward, backward = by_id["brighten-0001"], by_id["dim-0001"]
    assert forward.split == backward.split
    a, b = _decode_all(tmp_path / forward.path), _decode_all(tmp_path / backward.path)
    assert len(a) == 8 * FRAMES_PER_SEGMENT
    np.testing.assert_array_equal(a, b[::-1])
    assert not np.array_equal(a, b)  # and it does change
    # the sampled frames of the pair are the same frames in reverse order
    sa, sb = sample_clip(tmp_path / forward.path, 8), sample_clip(tmp_path / backward.path, 8)
    np.testing.assert_array_equal(sa.frames, sb.frames[::-1])
    np.testing.assert_array_equal(sa.frame_index, np.arange(1, 24, 3))


def test_demo_is_deterministic(tmp_path):
    first = generate_demo(tmp_path / "a", clips_per_class=1, num_frames=4, seed=7, size=32)
    second = generate_demo(tmp_path / "b", clips_per_class=1, num_frames=4, seed=7, size=32)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(_decode_all(tmp_path / "a" / x.path), _decode_all(tmp_path / "b" / y.path))


def _write_vfr(path, times: list[float]) -> None:
    """A variable-frame-rate video: frame k shows the grey level 10*k and is presented at times[k]."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv444p"
        stream.options = {"qp": "0"}
        stream.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 10 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_sampling_follows_timestamps_not_frame_counts(tmp_path):
    # ten quick frames in the first second, then one frame per second
    times = [k * 0.1 for k in range(10)] + [1.0, 2.0, 3.0, 4.0]
    path = tmp_path / "vfr.mkv"
    _write_vfr(path, times)
    decoded_times, end = frame_times(path)
    np.testing.assert_allclose(decoded_times, times, atol=1e-3)
    assert 4.0 < end <= 5.0
    sampled = sample_clip(path, 4)
    centres = segment_centres(0.0, end, 4)
    expected = [max(k for k, t in enumerate(times) if t <= c + 1e-9) for c in centres]
    assert expected[1:] == [10, 11, 12]  # a frame-count sampler would pick frames 5, 8, 12
    np.testing.assert_allclose(sampled.timestamps, [times[k] for k in expected], atol=1e-3)
    assert [int(round(f[0, 0, 0] / 10)) for f in sampled.frames] == expected


def test_segment_sampling_and_errors(tmp_path):
    frames = np.stack([np.full((16, 16, 3), 5 * k, np.uint8) for k in range(50)])
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=10)
    sampled = sample_clip(path, 5, start=1.0, end=2.0)
    np.testing.assert_allclose(sampled.timestamps, segment_centres(1.0, 2.0, 5), atol=1e-6)
    np.testing.assert_array_equal(sampled.frame_index, [11, 13, 15, 17, 19])
    with_range = sample_clip(path, 5, frame_range=(10, 20))
    np.testing.assert_array_equal(with_range.frame_index, sampled.frame_index)
    with pytest.raises(VideoError, match="beyond"):
        sample_clip(path, 5, frame_range=(40, 60))
    with pytest.raises(VideoError, match="not found"):
        sample_clip(tmp_path / "missing.mp4", 4)
