"""FeatureCache: one index over every complete shard, with in-memory or streaming access.

A cache row is a clip; a clip has one or more views (schema v2) and the cache one or more layers,
of which a `FeatureCache` reads one. A version-1 shard is read as one view of one layer.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path

import h5py
import numpy as np

from stepcli.cache.chunks import DIRECT, advise_ahead, chunk_offsets, read_chunks, runs
from stepcli.cache.failures import read_failures
from stepcli.cache.format import FAILURES, SHARDS, Manifest
from stepcli.cache.records import TokenLayout
from stepcli.cache.schema import GROUP
from stepcli.errors import StepcliError

UNOPENED, THROUGH_H5PY = -2, -1  # a shard's entry in the descriptor table before it is read, and without direct reads


@dataclass(frozen=True)
class ReadBuffer:
    """Reused memory for clip views read together: `array` ``[n, T, P+N, D]`` float16 and `slots`,
    each slot's bytes as a buffer a scattered read fills, made once (not per read)."""

    array: np.ndarray
    slots: list[memoryview]

    @classmethod
    def empty(cls, clips: int, clip_shape: tuple[int, int, int]) -> ReadBuffer:
        array = np.empty((clips, *clip_shape), dtype=np.float16)
        data, size = memoryview(array.reshape(-1).view(np.uint8)), array[0].nbytes if clips else 0
        return cls(array, [data[k * size : (k + 1) * size] for k in range(clips)])

    def first(self, clips: int) -> ReadBuffer:
        return ReadBuffer(self.array[:clips], self.slots[:clips])


class FeatureCache:
    """Read side of a cache directory.

    ``tokens(rows, views)`` returns ``[len(rows), T, P+N, D]`` float16 of one view per row (view 0
    when `views` is None) of `layer` (the manifest's first layer when None). HDF5 handles are opened
    lazily and reopened after a fork, so a DataLoader worker gets its own handle per shard.
    """

    def __init__(self, cache_dir: Path | str, layer: int | None = None) -> None:
        self.path = Path(cache_dir)
        self.manifest = Manifest.load(self.path)
        layers = self.manifest.extraction.layers
        self.layer = layers[0] if layer is None else layer
        if self.layer not in layers:
            raise StepcliError(
                f"cache {self.path} holds layer{'s' if len(layers) > 1 else ''} {','.join(map(str, layers))}, "
                f"not {self.layer}; pick one of them or extract with --layers {','.join(map(str, (*layers, layer)))}"
            )
        self.shard_paths = sorted((self.path / SHARDS).glob("*.h5")) if (self.path / SHARDS).is_dir() else []
        clip_ids, labels, splits, shard_of, row_of, num_views, groups = [], [], [], [], [], [], []
        self.has_groups = True  # every shard records its clips' groups (older ones do not)
        seen: set[str] = set()
        for s, shard_path in enumerate(self.shard_paths):
            try:
                with h5py.File(shard_path, "r") as f:
                    ids = [x.decode() if isinstance(x, bytes) else x for x in f["clip_id"][:]]
                    shard_labels = f["label"][:]
                    shard_splits = [x.decode() if isinstance(x, bytes) else x for x in f["split"][:]]
                    views = f["frame_index"].shape[1] if f["frame_index"].ndim == 3 else 1
                    shard_groups = (
                        [x.decode() if isinstance(x, bytes) else x for x in f[GROUP][:]] if GROUP in f else None
                    )
            except (OSError, KeyError) as err:
                raise StepcliError(f"shard {shard_path} cannot be read ({err}); delete it and rerun extract") from None
            self.has_groups = self.has_groups and shard_groups is not None
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
                groups.append(shard_groups[r] if shard_groups is not None and shard_groups[r] else clip_id)
                shard_of.append(s)
                row_of.append(r)
                num_views.append(views)
        self.clip_ids = clip_ids
        self.labels = np.asarray(labels, dtype=np.int64)
        self.splits = np.asarray(splits, dtype=object)
        #: what each clip belongs with (source video, twins); its own id where the shard records none
        self.groups = np.asarray(groups, dtype=object)
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._row_of = np.asarray(row_of, dtype=np.int64)
        self.num_views = np.asarray(num_views, dtype=np.int64)  # [clips]
        self._first_item = np.concatenate([[0], np.cumsum(self.num_views)[:-1]]).astype(np.int64)
        self._handles: dict[int, h5py.File] = {}
        # per shard: the descriptor of its file for direct reads, UNOPENED or THROUGH_H5PY
        self._fd_of = np.full(len(self.shard_paths), UNOPENED, dtype=np.int64)
        self._chunk_at = np.full(int(self.num_views.sum()), -1, dtype=np.int64)  # per clip view: file offset
        self._pid = os.getpid()
        self._memory: np.ndarray | None = None  # [views of all clips, T, P+N, D], clip-major
        self._buffers: dict[int, ReadBuffer] = {}  # reused read buffers (`buffer`), by slot

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names

    @cached_property
    def layout(self) -> TokenLayout:
        """The shape of one clip's tokens; probes are built for it."""
        return self.manifest.layout

    @cached_property
    def clip_shape(self) -> tuple[int, int, int]:
        """``(T, P+N, D)`` of one clip's tokens."""
        return self.layout.clip_shape

    @cached_property
    def view_nbytes(self) -> int:
        """Bytes of one clip view's tokens (one HDF5 chunk)."""
        return int(np.prod(self.clip_shape)) * 2

    @property
    def nbytes(self) -> int:
        """Bytes of this layer's tokens, every view of every clip."""
        return int(self.num_views.sum()) * self.view_nbytes

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        """The index (in `shard_paths`) of the shard holding each of `rows`."""
        return self._shard_of[np.asarray(rows, dtype=np.int64)]

    def view_items(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every view of `rows`: `(item_rows, item_views, owner)`, owner the position in `rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.num_views[rows]
        owner = np.repeat(np.arange(len(rows)), counts)
        views = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows[owner], views.astype(np.int64), owner

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
        present = set(self.clip_ids)
        return [r for r in read_failures(self.path / FAILURES) if r["clip_id"] not in present]

    def load_into_memory(self) -> None:
        """Read every clip view once, shard by shard, in storage order (the fast path for small caches)."""
        out = np.empty((int(self.num_views.sum()), *self.clip_shape), dtype=np.float16)
        for s in np.unique(self._shard_of):
            mine = np.flatnonzero(self._shard_of == s)
            stored = self._tokens(s)[:]
            stored = stored[:, None] if stored.ndim == 4 else stored  # v1: one view
            for row in mine:
                first = self._first_item[row]
                out[first : first + self.num_views[row]] = stored[self._row_of[row]]
        self._memory = out

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def tokens(
        self,
        rows: np.ndarray | list[int],
        views: np.ndarray | list[int] | None = None,
        out: np.ndarray | ReadBuffer | None = None,
        slots: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[len(rows), T, P+N, D]`` float16: view ``views[k]`` (0 when None) of clip ``rows[k]``.

        With `out` (float16 ``[n, T, P+N, D]``, C-contiguous, or a reused `buffer`) the views are
        read into it instead, ``rows[k]`` into ``out[slots[k]]`` (`slots`: ``0..len(rows)-1`` when
        None), and `out` is returned: rows given in storage order go into any slots with one
        scattered read per run of neighbouring chunks.
        """
        rows = np.asarray(rows, dtype=np.int64)
        views = np.zeros(len(rows), dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)
        if len(views) != len(rows) or np.any(views < 0) or np.any(views >= self.num_views[rows]):
            raise StepcliError(f"views {views.tolist()} do not name a view of each clip {rows.tolist()}")
        parts = out.slots if isinstance(out, ReadBuffer) else None
        out = out.array if isinstance(out, ReadBuffer) else out
        if out is None:
            if self._memory is not None:
                return self._memory[self._first_item[rows] + views]
            out = np.empty((len(rows), *self.clip_shape), dtype=np.float16)
        elif out.shape[1:] != self.clip_shape or out.dtype != np.float16 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float16 [n, {self.clip_shape}], got {out.dtype} {out.shape}")
        slots = np.arange(len(rows)) if slots is None else np.asarray(slots, dtype=np.int64)
        if self._memory is not None:
            out[slots] = self._memory[self._first_item[rows] + views]
            return out
        files, starts = self._locate(rows, views)
        size = self.view_nbytes
        for k in np.flatnonzero(starts < 0).tolist():  # shards that cannot be read directly
            stored, row = self._tokens(int(self._shard_of[rows[k]])), self._row_of[rows[k]]
            out[slots[k]] = stored[row] if stored.ndim == 4 else stored[row, views[k]]
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        for a, b in runs(files, starts, size):  # a shuffled batch: one read per clip view
            if starts[a] < 0:
                continue
            mine = slots[a:b]
            if mine[-1] - mine[0] == b - a - 1 and (b - a == 1 or (np.diff(mine) == 1).all()):
                into = buffer[mine[0] * size : (mine[-1] + 1) * size]  # neighbours in the file and in `out`
            elif parts is not None:
                into = list(itemgetter(*mine.tolist())(parts))  # b - a > 1 here: a tuple of them
            else:
                into = [buffer[s * size : (s + 1) * size] for s in mine.tolist()]
            try:
                read_chunks(int(files[a]), int(starts[a]), into)
            except OSError as err:
                shard = self.shard_paths[self._shard_of[rows[a]]]
                raise StepcliError(f"shard {shard} cannot be read ({err})") from None
        return out

    def prefetch(self, rows: np.ndarray | list[int], views: np.ndarray | list[int] | None = None) -> None:
        """Ask the kernel to start reading these clip views from disk now, without waiting for
        them (a streamed reader calls it for the batches ahead of the one it reads); a no-op in
        memory and for shards read through h5py."""
        if self._memory is not None or not len(rows):
            return
        rows = np.asarray(rows, dtype=np.int64)
        views = np.zeros(len(rows), dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)
        files, starts = self._locate(rows, views)
        size = int(np.prod(self.clip_shape)) * 2
        order = np.lexsort((starts, files))  # storage order, so that neighbours merge into one request
        files, starts = files[order], starts[order]
        for a, b in runs(files, starts, size):
            if starts[a] >= 0:
                advise_ahead(int(files[a]), int(starts[a]), (b - a) * size)

    def buffer(self, slot: int, clips: int) -> ReadBuffer:
        """Room for `clips` clip views on reused memory: the same slot returns the same memory
        (grown when too small) until `close`, so a streamed epoch does not pay the kernel for fresh
        zeroed pages at every group it stages (`stepcli.cache.staging`)."""
        held = self._buffers.get(slot)
        if held is None or len(held.array) < clips:
            held = self._buffers[slot] = ReadBuffer.empty(clips, self.clip_shape)
        return held.first(clips)

    def open_shards(self, rows: np.ndarray) -> None:
        """Open the shards holding `rows` for direct reads now: `tokens` opens a shard the first
        time it reads one, which several threads reading together must not do at once."""
        for shard in np.unique(self._shard_of[np.asarray(rows, dtype=np.int64)]).tolist():
            self._open_direct(shard)

    def resident(self, rows: np.ndarray, views: np.ndarray | None = None, probes: int = 16) -> bool:
        """Whether the kernel holds these clip views in memory already, judged by reading up to
        `probes` of them spread over `rows` with RWF_NOWAIT (which fails instead of waiting for the
        disk); False where that cannot be asked (another platform, a shard read through h5py)."""
        nowait = getattr(os, "RWF_NOWAIT", None)
        if nowait is None or not len(rows) or self._memory is not None:
            return self._memory is not None
        pick = np.linspace(0, len(rows) - 1, min(probes, len(rows))).astype(np.int64)
        rows = np.asarray(rows, dtype=np.int64)[pick]
        views = np.zeros(len(rows), dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)[pick]
        files, starts = self._locate(rows, views)
        scratch = bytearray(self.view_nbytes)
        for fd, start in zip(files.tolist(), starts.tolist(), strict=True):
            try:
                if fd < 0 or start < 0 or os.preadv(fd, [scratch], start, nowait) != len(scratch):
                    return False
            except (BlockingIOError, OSError):
                return False
        return True

    def _locate(self, rows: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per slot, the file descriptor and byte offset of its chunk (-1, -1: read through h5py),
        from two tables filled the first time each shard is read."""
        shard_of = self._shard_of[rows]
        files = self._fd_of[shard_of]
        if (files == UNOPENED).any():
            for shard in np.unique(shard_of[files == UNOPENED]).tolist():
                self._open_direct(shard)
            files = self._fd_of[shard_of]
        starts = np.where(files >= 0, self._chunk_at[self._first_item[rows] + views], -1)
        return files, starts

    def _open_direct(self, shard: int) -> None:
        """Find where a shard's chunks lie and open its file for direct reads (or mark it for h5py)."""
        if self._fd_of[shard] != UNOPENED:
            return
        offsets = chunk_offsets(self._tokens(shard)) if DIRECT else None
        if offsets is None:
            self._fd_of[shard] = THROUGH_H5PY
            return
        mine = np.flatnonzero(self._shard_of == shard)
        items = self._first_item[mine][:, None] + np.arange(offsets.shape[1])
        valid = np.arange(offsets.shape[1]) < self.num_views[mine][:, None]
        self._chunk_at[items[valid]] = offsets[self._row_of[mine]][valid]
        self._fd_of[shard] = os.open(self.shard_paths[shard], os.O_RDONLY)

    def timing(self, row: int, view: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(frame_index [T], timestamp [T])`` of the frames of one clip view."""
        f = self._handle(self._shard_of[row])
        index, times = f["frame_index"][self._row_of[row]], f["timestamp"][self._row_of[row]]
        return (index, times) if index.ndim == 1 else (index[view], times[view])

    def _tokens(self, shard: int) -> h5py.Dataset:
        """The shard's tokens of this cache's layer: ``[V, K, T, P+N, D]`` (v1: ``[V, T, P+N, D]``)."""
        stored = self._handle(shard)["tokens"]
        return stored if isinstance(stored, h5py.Dataset) else stored[str(self.layer)]

    def _handle(self, shard: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a worker: parent's handles are not ours to use
            self._handles = {}  # (descriptors for direct reads are inherited and stay valid: reads are positional)
            self._pid = os.getpid()
        if shard not in self._handles:
            self._handles[shard] = h5py.File(self.shard_paths[shard], "r")
        return self._handles[shard]

    @property
    def direct_shards(self) -> list[bool | None]:
        """Per shard: read directly (True), through h5py (False), or not read yet (None)."""
        return [None if fd == UNOPENED else bool(fd >= 0) for fd in self._fd_of.tolist()]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        for fd in self._fd_of[self._fd_of >= 0].tolist():
            os.close(fd)
        self._handles = {}
        self._buffers = {}
        self._fd_of[:] = UNOPENED
