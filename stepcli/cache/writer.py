"""Shard writer: a shard is written under a temporary name and renamed only once complete.

A killed process therefore leaves only ``*.h5.<pid>.tmp`` files, which the next run of that rank
deletes; every ``*.h5`` in ``shards/`` is complete and its clips are skipped on resume. A write
that fails (a full disk) discards the shard being written, never renaming a partial one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from stepcli.cache.format import SCHEMA_VERSION, SHARDS
from stepcli.cache.lock import is_held
from stepcli.cache.schema import CLIP_DATASETS, TOKEN_DTYPE, TOKENS, token_datasets

# a temporary shard carries its writer's pid, so no two processes ever write one file
_SHARD_NAME = re.compile(r"^r(\d+)-(\d+)\.h5(\.\d+)?(\.tmp)?$")


class _OpenShard:
    """One shard being written: its temporary and final paths, HDF5 file, datasets and clip count."""

    def __init__(
        self, tmp_path: Path, final_path: Path, layers: tuple[int, ...], clip_shape: tuple[int, ...], attrs: dict
    ) -> None:
        K, T, L, D = clip_shape
        self.tmp_path, self.final_path, self.count = tmp_path, final_path, 0
        f = self.file = h5py.File(tmp_path, "w")
        group = f.create_group(TOKENS)
        for layer in layers:  # one chunk per clip view: a view is read whole, and alone when training
            group.create_dataset(str(layer), (0, K, T, L, D), maxshape=(None, K, T, L, D), dtype=TOKEN_DTYPE,
                                 chunks=(1, 1, T, L, D))  # fmt: skip
        for spec in CLIP_DATASETS:
            row = spec.row_shape(K, T)
            f.create_dataset(spec.name, (0, *row), maxshape=(None, *row), dtype=spec.dtype)
        for key, value in attrs.items():
            f.attrs[key] = value
        # held open: a handle dropped mid-write flushes, which on a full disk fails again
        self.datasets = {spec.name: f[spec.name] for spec in CLIP_DATASETS}
        self.datasets |= {name: f[name] for name in token_datasets(SCHEMA_VERSION, layers)}

    def discard(self) -> None:
        """Drop this shard's file, so that no incomplete file ever gets a final name."""
        self.tmp_path.unlink(missing_ok=True)
        # closing flushes HDF5's caches, which would fail again on a full disk and leave handles
        # that fail once more at exit: point the abandoned file's descriptor at /dev/null first
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, self.file.id.get_vfd_handle())
            self.datasets = {}
            self.file.close()
        except (OSError, RuntimeError):
            pass  # nothing of this file is kept
        finally:
            os.close(null)


class ShardWriter:
    """Appends clips to the current shard of one rank and rolls over every ``clips_per_shard``.

    Clips with different numbers of views (train clips with augmented views, eval clips without)
    go to different shards, each holding ``[V, K, T, P+N, D]`` per layer with one K.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        clips_per_shard: int = 64,
        attrs: dict | None = None,
        layers: tuple[int, ...] = (-1,),
    ) -> None:
        self.shard_dir = Path(cache_dir) / SHARDS
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.clips_per_shard = clips_per_shard
        self.layers = tuple(layers)
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
        self._open: dict[int, _OpenShard] = {}  # by views per clip
        self.completed: list[Path] = []

    def add(
        self,
        clip_id: str,
        label: int,
        split: str,
        tokens: list[np.ndarray],
        frame_index: np.ndarray,
        timestamps: np.ndarray,
        group: str = "",
    ) -> None:
        """Append one clip: ``tokens`` per layer ``[K, T, P+N, D]`` (stored as float16), ``frame_index``
        and ``timestamps`` ``[K, T]``; ``group`` is what the clip belongs with ("": itself)."""
        self.add_clips([clip_id], [label], [split], [t[None] for t in tokens], np.asarray(frame_index)[None],
                       np.asarray(timestamps)[None], [group])  # fmt: skip

    def add_clips(
        self,
        clip_ids: list[str],
        labels: list[int] | np.ndarray,
        splits: list[str],
        tokens: list[np.ndarray],
        frame_index: np.ndarray,
        timestamps: np.ndarray,
        groups: list[str] | None = None,
    ) -> None:
        """Append clips that have the same views: ``tokens`` per layer ``[N, K, T, P+N, D]``,
        ``frame_index`` and ``timestamps`` ``[N, K, T]`` (or one ``[K, T]`` for all). Each shard's
        share is written with one resize, one write per dataset and one flush: a bulk writer (a
        synthetic cache, a conversion) pays HDF5's per-call cost once per shard, not per clip."""
        n, K = len(clip_ids), tokens[0].shape[1]
        per_frame = {"frame_index": np.asarray(frame_index), "timestamp": np.asarray(timestamps)}
        per_frame = {k: np.broadcast_to(v, (n, *v.shape[-2:])) for k, v in per_frame.items()}
        groups = [g or c for g, c in zip(groups or [""] * n, clip_ids, strict=True)]
        values = {"clip_id": np.asarray(clip_ids, dtype=object), "label": np.asarray(labels, dtype=np.int64),
                  "split": np.asarray(splits, dtype=object), **per_frame, "group": np.asarray(groups, dtype=object)}  # fmt: skip
        values |= {f"tokens/{layer}": t for layer, t in zip(self.layers, tokens, strict=True)}
        start = 0
        while start < n:
            try:
                if K not in self._open:
                    self._open[K] = self._new_shard(tokens[0].shape[1:])
                shard = self._open[K]
                take = min(n - start, self.clips_per_shard - shard.count)
                for name, value in values.items():
                    shard.datasets[name].resize(shard.count + take, axis=0)
                    part = value[start : start + take]
                    shard.datasets[name][shard.count :] = part.astype(TOKEN_DTYPE) if name.startswith(TOKENS) else part
                shard.file.flush()  # a write that fails (a full disk) fails here, for these clips
            except (OSError, RuntimeError):
                self.discard()
                raise
            shard.count += take
            start += take
            if shard.count >= self.clips_per_shard:
                self._close(K)

    def close_shard(self) -> None:
        """Close every open shard and give it its final name (the commit point)."""
        for K in sorted(self._open):
            self._close(K)

    close = close_shard

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # a failed write has discarded its shards already; on any other exception the partial
        # shards are complete in themselves: keep what was done
        self.close_shard()

    def discard(self) -> None:
        """Drop every shard being written (after a failed write: their files cannot be trusted)."""
        for K in list(self._open):
            self._open.pop(K).discard()

    def _close(self, K: int) -> None:
        shard = self._open[K]
        try:
            shard.datasets = {}
            shard.file.close()
            with open(shard.tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
        except (OSError, RuntimeError):
            self.discard()
            raise
        del self._open[K]
        os.replace(shard.tmp_path, shard.final_path)
        self.completed.append(shard.final_path)

    def _new_shard(self, clip_shape: tuple[int, ...]) -> _OpenShard:
        name = f"r{self.rank:03d}-{self._next_number:05d}.h5"
        self._next_number += 1
        tmp = self.shard_dir / f"{name}.{os.getpid()}.tmp"
        return _OpenShard(tmp, self.shard_dir / name, self.layers, clip_shape, self.attrs)


def remove_stale_temporaries(shard_dir: Path, rank: int, world_size: int) -> None:
    """Delete half-written shards left by killed runs of the ranks this process now stands in for
    (not those of a rank that a live process holds: they are being written)."""
    for entry in os.listdir(shard_dir):
        m = _SHARD_NAME.match(entry)
        owner = int(m.group(1)) if m else -1
        if m and m.group(4) and owner % world_size == rank and (owner == rank or not is_held(shard_dir.parent, owner)):
            (shard_dir / entry).unlink(missing_ok=True)
