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
        self._datasets: dict[str, h5py.Dataset] = {}  # held open: a handle dropped mid-write flushes
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
        values = {"tokens": tokens.astype(np.float16), "clip_id": clip_id, "label": label, "split": split,
                  "frame_index": frame_index, "timestamp": timestamps}  # fmt: skip
        try:
            if self._file is None:
                self._open(tokens.shape)
            for name, value in values.items():
                self._datasets[name].resize(self._count + 1, axis=0)
                self._datasets[name][self._count] = value
            self._file.flush()  # a write that fails (a full disk) fails here, for this clip
        except (OSError, RuntimeError):
            self.discard()
            raise
        self._count += 1
        if self._count >= self.clips_per_shard:
            self.close_shard()

    def close_shard(self) -> None:
        """Close the current shard and give it its final name (the commit point)."""
        if self._file is None:
            return
        try:
            self._datasets = {}
            self._file.close()
            self._file = None
            with open(self._tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
        except (OSError, RuntimeError):
            self.discard()
            raise
        os.replace(self._tmp_path, self._final_path)
        self._tmp_path = None
        self.completed.append(self._final_path)
        self._count = 0

    close = close_shard

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # a failed write has discarded its shard already; on any other exception the partial
        # shard is complete in itself: keep what was done
        self.close_shard()

    def discard(self) -> None:
        """Drop the shard being written, so that no incomplete file ever gets a final name."""
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
            self._tmp_path = None
        if self._file is not None:
            # closing flushes HDF5's caches, which would fail again on a full disk and leave handles
            # that fail once more at exit: point the abandoned file's descriptor at /dev/null first
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, self._file.id.get_vfd_handle())
                self._datasets = {}
                self._file.close()
            except (OSError, RuntimeError):
                pass  # nothing of this file is kept
            finally:
                os.close(null)
            self._file = None
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
        self._datasets = {name: f[name] for name in f}


def remove_stale_temporaries(shard_dir: Path, rank: int, world_size: int) -> None:
    """Delete half-written shards left by killed runs of the ranks this process now stands in for
    (not those of a rank that a live process holds: they are being written)."""
    for entry in os.listdir(shard_dir):
        m = _SHARD_NAME.match(entry)
        owner = int(m.group(1)) if m else -1
        if m and m.group(4) and owner % world_size == rank and (owner == rank or not is_held(shard_dir.parent, owner)):
            (shard_dir / entry).unlink(missing_ok=True)
