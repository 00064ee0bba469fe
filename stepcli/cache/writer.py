"""Shard writer: a shard is written under a temporary name and renamed only once complete.

A killed process therefore leaves at most one ``*.h5.tmp`` per rank, which the next run of that
rank deletes; every ``*.h5`` in ``shards/`` is complete and its clips are skipped on resume.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from stepcli.cache.format import SHARDS
from stepcli.cache.lock import is_held

# a temporary shard carries its writer's pid, so no two processes ever write one file
_SHARD_NAME = re.compile(r"^r(\d+)-(\d+)\.h5(\.\d+)?(\.tmp)?$")


class ShardWriter:
    """Appends clips to the current shard of one rank and rolls over every ``clips_per_shard``."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        clips_per_shard: int = 64,
        attrs: dict | None = None,
    ) -> None:
        self.shard_dir = Path(cache_dir) / SHARDS
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.clips_per_shard = clips_per_shard
        self.attrs = {k: json.dumps(v) if not isinstance(v, str | int | float) else v for k, v in (attrs or {}).items()}
        remove_stale_temporaries(self.shard_dir, rank, world_size)
        self._next_number = 1 + max(
            (
                int(m.group(2))
                for m in map(_SHARD_NAME.match, os.listdir(self.shard_dir))
                if m and int(m.group(1)) == rank
            ),
            default=-1,
        )
        self._file: h5py.File | None = None
        self._tmp_path: Path | None = None
        self._final_path: Path | None = None
        self._count = 0
        self.completed: list[Path] = []

    def add(
        self,
        clip_id: str,
        label: int,
        split: str,
        tokens: np.ndarray,
        frame_index: np.ndarray,
        timestamps: np.ndarray,
    ) -> None:
        """Append one clip; ``tokens`` is ``[T, P+N, D]`` and is stored as float16."""
        if self._file is None:
            self._open(tokens.shape)
        f = self._file
        i = self._count
        for name in ("tokens", "clip_id", "label", "split", "frame_index", "timestamp"):
            f[name].resize(i + 1, axis=0)
        f["tokens"][i] = tokens.astype(np.float16)
        f["clip_id"][i] = clip_id
        f["label"][i] = label
        f["split"][i] = split
        f["frame_index"][i] = frame_index
        f["timestamp"][i] = timestamps
        self._count += 1
        if self._count >= self.clips_per_shard:
            self.close_shard()

    def close_shard(self) -> None:
        """Close the current shard and give it its final name (the commit point)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        final = self._final_path
        with open(self._tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp_path, final)
        self._tmp_path = None
        self.completed.append(final)
        self._count = 0

    close = close_shard

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, OSError):
            self.discard()  # a failed write (e.g. a full disk) may have left the shard incomplete
        else:
            # on any other exception the partial shard is still complete in itself: keep what was done
            self.close_shard()

    def discard(self) -> None:
        """Drop the shard being written, so that no incomplete file ever gets a final name."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the close flushes, which fails again on a full disk; the file goes anyway
            self._file = None
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
        self._count = 0

    def _open(self, clip_shape: tuple[int, ...]) -> None:
        T, L, D = clip_shape
        name = f"r{self.rank:03d}-{self._next_number:05d}.h5"
        self._next_number += 1
        self._final_path = self.shard_dir / name
        self._tmp_path = self.shard_dir / f"{name}.{os.getpid()}.tmp"
        f = h5py.File(self._tmp_path, "w")
        f.create_dataset("tokens", (0, T, L, D), maxshape=(None, T, L, D), dtype=np.float16, chunks=(1, T, L, D))
        f.create_dataset("clip_id", (0,), maxshape=(None,), dtype=h5py.string_dtype())
        f.create_dataset("label", (0,), maxshape=(None,), dtype=np.int64)
        f.create_dataset("split", (0,), maxshape=(None,), dtype=h5py.string_dtype())
        f.create_dataset("frame_index", (0, T), maxshape=(None, T), dtype=np.int64)
        f.create_dataset("timestamp", (0, T), maxshape=(None, T), dtype=np.float64)
        for key, value in self.attrs.items():
            f.attrs[key] = value
        self._file = f


def remove_stale_temporaries(shard_dir: Path, rank: int, world_size: int) -> None:
    """Delete half-written shards left by killed runs of the ranks this process now stands in for
    (not those of a rank that a live process holds: they are being written)."""
    for entry in os.listdir(shard_dir):
        m = _SHARD_NAME.match(entry)
        owner = int(m.group(1)) if m else -1
        if m and m.group(4) and owner % world_size == rank and (owner == rank or not is_held(shard_dir.parent, owner)):
            (shard_dir / entry).unlink(missing_ok=True)
