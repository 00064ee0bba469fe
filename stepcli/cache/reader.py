"""FeatureCache: one index over every complete shard, with in-memory or streaming access."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from stepcli import StepcliError
from stepcli.cache.format import FAILURES, SHARDS, Manifest
from stepcli.cache.records import TokenLayout


class FeatureCache:
    """Read side of a cache directory.

    ``tokens(rows)`` returns ``[len(rows), T, P+N, D]`` float16. HDF5 handles are opened lazily
    and reopened after a fork, so a DataLoader worker gets its own handle per shard.
    """

    def __init__(self, cache_dir: Path | str) -> None:
        self.path = Path(cache_dir)
        self.manifest = Manifest.load(self.path)
        self.shard_paths = sorted((self.path / SHARDS).glob("*.h5")) if (self.path / SHARDS).is_dir() else []
        clip_ids, labels, splits, shard_of, row_of = [], [], [], [], []
        seen: set[str] = set()
        self.duplicates = 0  # kept for callers: always 0, a cache holding a clip twice is refused
        for s, shard_path in enumerate(self.shard_paths):
            try:
                with h5py.File(shard_path, "r") as f:
                    ids = [x.decode() if isinstance(x, bytes) else x for x in f["clip_id"][:]]
                    shard_labels = f["label"][:]
                    shard_splits = [x.decode() if isinstance(x, bytes) else x for x in f["split"][:]]
            except (OSError, KeyError) as err:
                raise StepcliError(f"shard {shard_path} cannot be read ({err}); delete it and rerun extract") from None
            for r, clip_id in enumerate(ids):
                if not clip_id.strip() or clip_id in seen:
                    what = "a blank clip id" if not clip_id.strip() else f"clip id {clip_id!r} a second time"
                    raise StepcliError(
                        f"shard {shard_path} holds {what} (row {r}); the cache is damaged: run `stepcli verify {self.path}`"
                    )
                seen.add(clip_id)
                clip_ids.append(clip_id)
                labels.append(int(shard_labels[r]))
                splits.append(shard_splits[r])
                shard_of.append(s)
                row_of.append(r)
        self.clip_ids = clip_ids
        self.labels = np.asarray(labels, dtype=np.int64)
        self.splits = np.asarray(splits, dtype=object)
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._row_of = np.asarray(row_of, dtype=np.int64)
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._memory: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names

    @property
    def layout(self) -> TokenLayout:
        """The shape of one clip's tokens; probes are built for it."""
        return self.manifest.layout

    @property
    def clip_shape(self) -> tuple[int, int, int]:
        """``(T, P+N, D)`` of one clip's tokens."""
        return self.layout.clip_shape

    @property
    def nbytes(self) -> int:
        T, L, D = self.clip_shape
        return len(self) * T * L * D * 2

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def split_counts(self) -> dict[str, Counter]:
        """``{split: Counter(class_name -> clips)}``."""
        names = self.class_names
        counts: dict[str, Counter] = {}
        for split, label in zip(self.splits, self.labels, strict=True):
            counts.setdefault(split or "(none)", Counter())[names[label]] += 1
        return counts

    def failures(self) -> list[dict]:
        """Clips whose latest extraction attempt failed and that are not in the cache since."""
        from stepcli.cache.failures import read_failures

        present = set(self.clip_ids)
        return [r for r in read_failures(self.path / FAILURES) if r["clip_id"] not in present]

    def load_into_memory(self) -> None:
        """Read every clip once, shard by shard, in storage order (the fast path for small caches)."""
        out = np.empty((len(self), *self.clip_shape), dtype=np.float16)
        for s in np.unique(self._shard_of):
            mine = np.flatnonzero(self._shard_of == s)
            out[mine] = self._handle(s)["tokens"][:][self._row_of[mine]]
        self._memory = out

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def tokens(self, rows: np.ndarray | list[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self._memory is not None:
            return self._memory[rows]
        out = np.empty((len(rows), *self.clip_shape), dtype=np.float16)
        for k, row in enumerate(rows):
            out[k] = self._handle(self._shard_of[row])["tokens"][self._row_of[row]]
        return out

    def timing(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frame_index [T], timestamp [T])`` of one clip's sampled frames."""
        f = self._handle(self._shard_of[row])
        return f["frame_index"][self._row_of[row]], f["timestamp"][self._row_of[row]]

    def _handle(self, shard: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a worker: parent's handles are not ours to use
            self._handles = {}
            self._pid = os.getpid()
        if shard not in self._handles:
            self._handles[shard] = h5py.File(self.shard_paths[shard], "r")
        return self._handles[shard]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
