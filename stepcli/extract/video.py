"""PyAV decoding with timestamp-based frame sampling.

A clip ``[start, end)`` is cut into T equal segments and the frame *on screen* at the centre of
each segment is taken (the last frame whose presentation time is <= the centre time). Working
in presentation time rather than frame counts keeps the sampling right for variable frame rate,
and it is symmetric: a clip and its time-reversal yield the same frames in reverse order.
Segments seek to the keyframe before ``start`` instead of decoding a long video from its start.
``num_clips`` N > 1 takes N temporal clips (test-time views): clip c takes, in every segment, the
frame at offset (c + 0.5) / N of it, so the N frame sets are evenly offset and clip 0 of 1 is the
centre frames. All clips are decoded in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter


class VideoError(Exception):
    """A video that cannot give the requested frames; the message is the per-clip failure reason."""


@dataclass
class SampledFrames:
    frames: np.ndarray  # [N*T, H, W, 3] uint8 RGB (temporal clip-major; N = 1 by default)
    frame_index: np.ndarray  # [N*T] index of each frame in the stream (from its timestamp)
    timestamps: np.ndarray  # [N*T] presentation time in seconds
    decoded: int  # frames decoded to get them (seeking keeps this small for segments)


def segment_centres(start: float, end: float, num_frames: int, offset: float = 0.5) -> np.ndarray:
    """Times at `offset` (0.5: the centre) of ``num_frames`` equal segments of ``[start, end)``."""
    step = (end - start) / num_frames
    return start + step * (np.arange(num_frames) + offset)


def clip_offsets(num_clips: int) -> np.ndarray:
    """Segment offsets of N evenly offset temporal clips; one clip is the segment centres."""
    return (np.arange(num_clips) + 0.5) / num_clips


def frame_times(path: Path | str) -> tuple[np.ndarray, float]:
    """Presentation times of every frame (seconds, sorted) and the end time of the last one.

    Reads packets only (no decoding), so it is cheap even for long videos.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        pts, durations = [], []
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            pts.append(packet.pts)
            durations.append(packet.duration or 0)
    if not pts:
        raise VideoError("no video frames")
    order = np.argsort(pts)
    times = np.asarray([float(pts[i] * tb) for i in order])
    last = order[-1]
    last_duration = float(durations[last] * tb) if durations[last] else _nominal_frame_time(times)
    return times, times[-1] + last_duration


def sample_clip(
    path: Path | str,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    frame_range: tuple[int, int] | None = None,
    num_clips: int = 1,
) -> SampledFrames:
    """Decode ``num_clips`` x ``num_frames`` frames (segment centres for one clip) of a whole video
    or of a segment of it."""
    path = str(path)
    if not Path(path).exists():
        raise VideoError("file not found")
    if Path(path).stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    # packets only (no decoding): the frame times place a segment and say whether the video holds it
    times, video_end = frame_times(path)
    if frame_range is not None:
        first, stop = frame_range
        if first < 0 or stop <= first:
            raise VideoError(f"bad frame range {first}..{stop}")
        if stop > len(times):
            raise VideoError(f"frame range {first}..{stop} is beyond the video's {len(times)} frames")
        start, end = times[first], (times[stop] if stop < len(times) else video_end)
    else:
        _check_inside(start, end, video_end, _nominal_frame_time(times))
        start = times[0] if start is None else start
        end = video_end if end is None else end
    if end <= start:
        raise VideoError(f"segment end {end:.3f}s is not after its start {start:.3f}s")
    targets = np.concatenate([segment_centres(start, end, num_frames, o) for o in clip_offsets(num_clips)])
    order = np.argsort(targets, kind="stable")  # the decoder walks forward through sorted times
    found = _decode_at(path, targets[order], start, times)
    back = np.argsort(order)
    return SampledFrames(found.frames[back], found.frame_index[back], found.timestamps[back], found.decoded)


def _check_inside(start: float | None, end: float | None, video_end: float, frame_time: float) -> None:
    """A segment in seconds must lie in the video (half a frame of slack for rounded times):
    cutting it short would make a clip of something else under the segment's label."""
    slack = frame_time / 2
    if start is not None and start >= video_end - slack:
        raise VideoError(f"segment start {start:.3f}s is not before the video's end at {video_end:.3f}s")
    if end is not None and end > video_end + slack:
        raise VideoError(f"segment {start or 0:.3f}-{end:.3f}s ends after the video's end at {video_end:.3f}s")


def _decode_at(path: str, targets: np.ndarray, start: float, times: np.ndarray | None) -> SampledFrames:
    chosen: list[av.VideoFrame | None] = [None] * len(targets)
    chosen_time = np.zeros(len(targets))
    decoded = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        fps = stream.average_rate or stream.guessed_rate
        offset = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if start > offset + 1.0:  # worth a seek: land on the keyframe at or before start
            container.seek(int(start / tb), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                decoded += 1
                t = float(frame.pts * tb)
                # this frame is on screen for every target at or after its time
                hit = targets >= t - 1e-9
                for k in np.flatnonzero(hit):
                    chosen[k] = frame
                    chosen_time[k] = t
                if t > targets[-1]:  # past the last target: nothing later can change the choice
                    break
        except av.FFmpegError as err:
            if decoded == 0:
                raise VideoError(f"cannot decode: {err}") from None
            # a truncated file: keep what decoded, the missing targets fail below
    if decoded == 0:
        raise VideoError("no decodable frames")
    missing = [k for k, f in enumerate(chosen) if f is None]
    if missing:
        # targets before the first frame's time (e.g. a clip starting at 0 with pts offset): take the first
        first = next(f for f in chosen if f is not None)
        first_k = next(k for k, f in enumerate(chosen) if f is not None)
        for k in missing:
            if k < first_k:
                chosen[k], chosen_time[k] = first, chosen_time[first_k]
            else:
                raise VideoError("video ends before the requested segment (truncated?)")
    rgb = VideoReformatter()  # one colour converter for the clip: `to_ndarray(format=...)` makes one per frame
    frames = np.stack([rgb.reformat(f, format="rgb24").to_ndarray() for f in chosen])
    if times is not None:  # exact, whatever the container's start offset
        frame_index = np.searchsorted(times, chosen_time - 1e-6).astype(np.int64)
    else:
        rate = float(fps) if fps else 0.0
        frame_index = np.round((chosen_time - offset) * rate).astype(np.int64)
    return SampledFrames(frames=frames, frame_index=frame_index, timestamps=chosen_time, decoded=decoded)


def _open(path: str):
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"cannot open as video: {_short(err)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def _nominal_frame_time(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / 25


def _short(err: Exception) -> str:
    return str(err).split("\n")[0][:200]


def write_video(path: Path | str, frames: np.ndarray, fps: int | Fraction = 24, lossless: bool = True) -> None:
    """Write ``[T, H, W, 3]`` uint8 RGB frames as H.264 (lossless by default, so decoding returns them)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"} if lossless else {"crf": "23"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
