"""The shard schema, written once: which HDF5 datasets a shard holds, their dtypes and the shape of
one clip's row in each schema version. The writer creates shards from it, `verify` checks them
against it and the reader names datasets through it.

Version 2 shards hold, per cached layer L, `tokens/<L>` `[V, K, T, P+N, D]` float16 (K views per
clip) and per-view `frame_index` / `timestamp` `[V, K, T]`; version 1 shards hold one `tokens`
`[V, T, P+N, D]` and `[V, T]` indices, read as one view of one layer.

`group` (a string per clip, since stepcli records it) names what the clip belongs with: its source
video, a CSV's `group` column, the demo's pair of twins. A split drawn from the cache never puts one
group in two splits. Shards written before it (v1, and v2 without it) still read: each clip is then
its own group.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

TOKENS = "tokens"  # v2: the group of per-layer datasets; v1: the one tokens dataset
TOKEN_DTYPE = np.float16


@dataclass(frozen=True)
class ClipDataset:
    """One per-clip dataset other than the tokens."""

    name: str
    kind: str  # "string", "integer" or "float": what verify accepts
    per_frame: bool  # a row is `[K, T]` (v2) or `[T]` (v1) rather than a scalar
    optional: bool = False  # older shards lack it; the reader falls back (see the module docstring)

    @property
    def dtype(self) -> np.dtype:
        """What the writer stores."""
        return {"string": h5py.string_dtype(), "integer": np.dtype(np.int64), "float": np.dtype(np.float64)}[self.kind]

    def row_shape(self, views: int | None, num_frames: int) -> tuple[int, ...]:
        """One clip's shape: `()`, or `[K, T]` (v2, `views` = K) / `[T]` (v1, `views` None)."""
        if not self.per_frame:
            return ()
        return (num_frames,) if views is None else (views, num_frames)


CLIP_DATASETS = (
    ClipDataset("clip_id", "string", per_frame=False),
    ClipDataset("label", "integer", per_frame=False),
    ClipDataset("split", "string", per_frame=False),
    ClipDataset("frame_index", "integer", per_frame=True),
    ClipDataset("timestamp", "float", per_frame=True),
    ClipDataset("group", "string", per_frame=False, optional=True),
)
CLIP_ID, LABEL, SPLIT, FRAME_INDEX, TIMESTAMP, GROUP = (d.name for d in CLIP_DATASETS)


def token_datasets(schema_version: int, layers: tuple[int, ...]) -> list[str]:
    """The shard datasets holding tokens: one per cached layer (v2), or `tokens` (v1)."""
    if schema_version < 2:
        return [TOKENS]
    return [f"{TOKENS}/{layer}" for layer in layers]
