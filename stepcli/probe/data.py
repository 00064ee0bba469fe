"""Which cached clips a probe trains, validates and tests on, and how their tokens reach it.

Splits come from the cache; a dataset without splits gets a seeded, stratified 60/20/20 split,
and one without a validation split gets a stratified slice of train, so that model selection
never looks at test. A drawn split moves whole clip groups (the cache's `groups`: a source video,
a clip and its reversed twin), so no clip is scored beside its twin in train. Low-data subsets (`shots`, `train_fraction`) are drawn per class with the
run's seed. Batches are read in the main process from memory, or streamed from HDF5 by
DataLoader workers that each open their own file handles (FeatureCache reopens after a fork);
an epoch over 512 MiB of clips is shuffled in groups and streamed a group at a time in-process
(`epoch_order`, `stepcli.cache.staging`).
Under torchrun every process draws the same batches and `shard_batch` gives each its share.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from stepcli.cache.chunks import READ_AHEAD_BYTES
from stepcli.cache.format import SPLITS
from stepcli.cache.reader import FeatureCache
from stepcli.cache.staging import StagedGroups
from stepcli.errors import StepcliError
from stepcli.workers import Watch, watched_items

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
# an epoch whose clips take more than SHUFFLE_GROUP_BYTES is shuffled in groups (`epoch_order`):
# random blocks of about SHUFFLE_BLOCK_BYTES of neighbouring clips, a group's worth shuffled together
SHUFFLE_GROUP_BYTES = 512 << 20
SHUFFLE_BLOCK_BYTES = 4 << 20
VAL_FROM_TRAIN = 0.2  # share of each class's train clips held out when the dataset has no val split


@dataclass
class Splits:
    """Cache rows per split; `source` says where the split came from (recorded in config.json)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)

    def rows(self, split: str) -> np.ndarray:
        return getattr(self, split)

    def counts(self) -> dict[str, int]:
        return {s: int(len(self.rows(s))) for s in SPLITS}

    def clip_ids(self, cache: FeatureCache) -> dict[str, list[str]]:
        return {s: [cache.clip_ids[r] for r in self.rows(s)] for s in SPLITS}

    def groups(self, cache: FeatureCache) -> dict[str, list[str]]:
        """Each split's clip groups, in the order of `clip_ids` (splits.json records them)."""
        return {s: [str(cache.groups[r]) for r in self.rows(s)] for s in SPLITS}


def stratified_split(
    rows: np.ndarray, labels: np.ndarray, fractions: tuple[float, ...], seed: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Cut each class's rows (shuffled with `seed`) by `fractions`; parts come back sorted.

    With `groups` (one per row) whole groups are cut instead, each counted under the class of its
    first row: no group lands in two parts. One group per row draws exactly the split without.
    """
    rng = np.random.default_rng([seed, 7919])
    rows = np.asarray(rows, dtype=np.int64)
    groups = rows.astype(object) if groups is None else np.asarray(groups, dtype=object)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    members = [rows[inverse.reshape(-1) == g] for g in range(len(first))]
    heads = rows[first]  # a group's first row stands for it
    head_labels = labels[first]
    by_head = {int(rows[f]): m for f, m in zip(first, members, strict=True)}
    parts: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for label in np.unique(labels):
        mine = rng.permutation(np.sort(heads[head_labels == label]))
        cuts = np.round(bounds * len(mine)).astype(int)
        for part, chunk in zip(parts, np.split(mine, cuts), strict=True):
            for head in chunk.tolist():
                part.extend(by_head[head].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _drawn_by(cache: FeatureCache, rows: np.ndarray) -> str:
    """What a split drawn over `rows` keeps together, for its one-line note."""
    if not cache.has_groups:
        return "one group per clip (the cache records no clip groups: re-extract it to split by source video)"
    return f"clip group ({len(set(cache.groups[rows].tolist()))} groups of {len(rows)} clips), no group in two splits"


def resolve_splits(cache: FeatureCache, seed: int) -> Splits:
    """Train/val/test rows of `cache`; raises a one-line error when a split ends up empty."""
    everything = np.arange(len(cache), dtype=np.int64)
    if len(cache) == 0:
        raise StepcliError(f"cache {cache.path} holds no clips; run `stepcli extract` first")
    if not any(cache.splits):
        train, val, test = stratified_split(everything, cache.labels, DEFAULT_FRACTIONS, seed, cache.groups)
        splits = Splits(train, val, test, "seeded-stratified-60/20/20")
        splits.notes.append(
            f"no splits in the cache: drew a seeded 60/20/20 split per class by {_drawn_by(cache, everything)}"
        )
    else:
        splits = Splits(cache.rows("train"), cache.rows("val"), cache.rows("test"), "cache")
        if len(splits.val) == 0 and len(splits.train) > 0:
            labels = cache.labels[splits.train]
            train = splits.train
            splits.train, splits.val = stratified_split(
                train, labels, (1 - VAL_FROM_TRAIN, VAL_FROM_TRAIN), seed, cache.groups[train]
            )
            splits.source = "cache+val-from-train"
            splits.notes.append(
                f"no val split in the cache: held out {VAL_FROM_TRAIN:.0%} of train per class by {_drawn_by(cache, train)}"
            )
    for name in SPLITS:
        if len(splits.rows(name)) == 0:
            counts = ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(Counter(cache.splits.tolist()).items()))
            raise StepcliError(f"cache {cache.path} has no '{name}' clips to use (clips per split: {counts})")
    return splits


@dataclass(frozen=True)
class Leakage:
    """Val and test clips whose frames, as a set, are a train clip's: exact duplicates and
    time-reversed twins (a hash of the sorted frame tokens). Their numbers are not held out."""

    val: int = 0
    test: int = 0

    @property
    def found(self) -> bool:
        return self.val + self.test > 0

    def to_dict(self) -> dict[str, int]:
        return {"val": self.val, "test": self.test}

    def warning(self) -> str:
        return (
            f"warning: {self.test} test and {self.val} val clips have a train clip's frames (exact duplicates or "
            "time-reversed twins): those numbers are not held out; split by clip group (docs/trust.md)"
        )


def frame_set_hashes(cache: FeatureCache, rows: np.ndarray, batch_size: int = 64) -> list[bytes]:
    """Per clip of `rows`: a hash of its view-0 frames' tokens as a set, blind to their order."""
    hashes = []
    for start in range(0, len(rows), batch_size):
        for clip in cache.tokens(rows[start : start + batch_size]):
            frames = sorted(hashlib.blake2b(frame.tobytes(), digest_size=16).digest() for frame in clip)
            hashes.append(hashlib.blake2b(b"".join(frames), digest_size=16).digest())
    return hashes


def find_leakage(cache: FeatureCache, splits: Splits) -> Leakage:
    """How many val and test clips repeat a train clip's frames (see `Leakage`); reads view 0 once."""
    train = set(frame_set_hashes(cache, splits.train))
    return Leakage(*(sum(h in train for h in frame_set_hashes(cache, splits.rows(s))) for s in ("val", "test")))


def subsample_train(
    rows: np.ndarray, labels: np.ndarray, class_names: list[str], seed: int, shots: int | None, fraction: float | None
) -> np.ndarray:
    """`shots` clips per class, or `fraction` of each class (at least one), drawn with `seed`."""
    if shots is None and fraction is None:
        return rows
    if shots is not None and fraction is not None:
        raise StepcliError("give --shots or --train-fraction, not both")
    if shots is not None and shots < 1:
        raise StepcliError(f"--shots must be at least 1 clip per class, got {shots}")
    if fraction is not None and not 0 < fraction <= 1:
        raise StepcliError(f"--train-fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 104729])
    chosen: list[int] = []
    for label in np.unique(labels):
        mine = rng.permutation(rows[labels == label])
        take = shots if shots is not None else max(1, round(fraction * len(mine)))
        if take > len(mine):
            raise StepcliError(f"--shots {shots}: class '{class_names[label]}' has only {len(mine)} train clips")
        chosen.extend(mine[:take].tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def available_memory() -> int:
    """Bytes of RAM the kernel could give us now (MemAvailable), falling back to free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def use_memory(cache: FeatureCache, in_memory: str, copies: int = 1) -> bool:
    """`auto`: load the cache when `copies` of it (one per process on this machine) take at most
    half of the available RAM; otherwise stream it, and say so, since streaming is slower."""
    if in_memory not in ("auto", "yes", "no"):
        raise StepcliError(f"--in-memory must be auto, yes or no, got {in_memory!r}")
    if in_memory != "auto":
        return in_memory == "yes"
    needed, available = cache.nbytes * copies, available_memory()
    if needed <= available // 2:
        return True
    each = f" ({copies} processes, one copy each)" if copies > 1 else ""
    log.info(
        f"--in-memory auto: the cache's tokens take {needed / 2**30:.1f} GiB{each}, more than half of the "
        f"{available / 2**30:.1f} GiB of memory available: streaming them from {cache.path} instead"
    )
    return False


class _RowBatches(Dataset):
    """Item i = (tokens `[b, T, P+N, D]` float16, labels `[b]`) of the i-th batch of cache rows,
    each row's view `views[i]` (view 0 when None). Streamed with the epoch's `groups`, each group
    is read whole when first needed (`StagedGroups`). Streamed without, every `ahead` items (about
    `READ_AHEAD_BYTES` of tokens) the reader asks the kernel for the next window of batches in
    one call, so that a cold cache has many reads in flight while a warm one pays little for it."""

    def __init__(
        self,
        cache: FeatureCache,
        batches: list[np.ndarray],
        views: list[np.ndarray] | None,
        groups: tuple[np.ndarray, ...] = (),
    ) -> None:
        self.cache, self.batches, self.views = cache, batches, views
        self.ahead = max(1, READ_AHEAD_BYTES // (cache.view_nbytes * max((len(b) for b in batches), default=1)))
        self.staged = None
        if groups and not cache.in_memory:
            view_of = None
            if views is not None:
                view_of = np.zeros(len(cache), dtype=np.int64)
                for batch, batch_views in zip(batches, views, strict=True):
                    view_of[batch] = batch_views
            self.staged = StagedGroups(cache, groups, view_of)
            self.where = self.staged.slices(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def _prefetch(self, first: int, end: int) -> None:
        window = range(first, min(end, len(self.batches)))
        if window:
            rows = np.concatenate([self.batches[j] for j in window])
            views = None if self.views is None else np.concatenate([self.views[j] for j in window])
            self.cache.prefetch(rows, views)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.batches[i]
        if self.staged is not None:
            return torch.from_numpy(self.staged.tokens(rows, self.where[i])), torch.from_numpy(self.cache.labels[rows])
        if not self.cache.in_memory and i % self.ahead == 0:  # this window is on its way: ask for the next
            self._prefetch(i + 1 if i == 0 else i + self.ahead, i + 2 * self.ahead)
        views = None if self.views is None else self.views[i]
        return torch.from_numpy(self.cache.tokens(rows, views)), torch.from_numpy(self.cache.labels[rows])


def iterate_batches(
    cache: FeatureCache,
    batches: list[np.ndarray],
    workers: int = 0,
    views: list[np.ndarray] | None = None,
    groups: tuple[np.ndarray, ...] = (),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the batches (with `views`, one per row, else view 0) in the given order: from memory
    or the cache's files in-process, or streamed from HDF5 by `workers` processes. With the
    epoch's `groups` (`EpochOrder.groups`) a streamed cache is read a group at a time in-process,
    whatever `workers` is: long reads keep up with a GPU where one read per clip needs processes."""
    dataset = _RowBatches(cache, batches, views, groups)
    if dataset.staged is not None:
        try:
            yield from (dataset[i] for i in range(len(dataset)))
        finally:
            dataset.staged.close()
        return
    if workers == 0 or cache.in_memory:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    yield from watched_items(dataset, workers, Watch("HDF5 reader worker", lambda i: f"batch {i}"))


def epoch_views(cache: FeatureCache, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """One view per clip of `rows` for this epoch, seeded: a probe sees every cached view over the
    epochs, one at a time, and never frames of different views mixed. `[len(cache)]`, 0 elsewhere."""
    views = np.zeros(len(cache), dtype=np.int64)
    rng = np.random.default_rng([seed, epoch, 8191])
    views[rows] = rng.integers(cache.num_views[rows])
    return views


@dataclass(frozen=True)
class EpochOrder:
    """An epoch's batches of rows and, when it was drawn in groups, each group's rows in the
    epoch's order (the batches are their concatenation, cut); `()`: one shuffle of every row."""

    batches: list[np.ndarray]
    groups: tuple[np.ndarray, ...] = ()


def epoch_order(rows: np.ndarray, batch_size: int, seed: int, epoch: int, view_bytes: int) -> EpochOrder:
    """A seeded shuffle of `rows` cut into batches (the last one may be smaller), the same whether
    the cache is in memory or streamed.

    Rows whose views take at most SHUFFLE_GROUP_BYTES (`view_bytes` each) are one permutation. More
    are shuffled in groups, as sharded loaders do, so that a streamed epoch reads its files in long
    runs (`stepcli.cache.staging`): the rows, in storage order, are cut into blocks of about
    SHUFFLE_BLOCK_BYTES of neighbours; the blocks are shuffled and taken a group of about
    SHUFFLE_GROUP_BYTES at a time (at least a batch), and each group's rows are shuffled together.
    """
    rng = np.random.default_rng([seed, epoch])
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) * view_bytes <= SHUFFLE_GROUP_BYTES:
        order = rng.permutation(rows)
        return EpochOrder([order[i : i + batch_size] for i in range(0, len(order), batch_size)])
    per_block = max(1, SHUFFLE_BLOCK_BYTES // max(1, view_bytes))
    blocks = np.array_split(np.sort(rows), -(-len(rows) // per_block))
    per_group = max(1, -(-max(batch_size, SHUFFLE_GROUP_BYTES // max(1, view_bytes)) // per_block))
    shuffled = rng.permutation(len(blocks))
    groups = tuple(
        rng.permutation(np.sort(np.concatenate([blocks[b] for b in shuffled[g : g + per_group]])))
        for g in range(0, len(blocks), per_group)
    )
    order = np.concatenate(groups)
    return EpochOrder([order[i : i + batch_size] for i in range(0, len(order), batch_size)], groups)


def epoch_batches(rows: np.ndarray, batch_size: int, seed: int, epoch: int, view_bytes: int) -> list[np.ndarray]:
    """`epoch_order`'s batches."""
    return epoch_order(rows, batch_size, seed, epoch, view_bytes).batches


def shard_batch(batch: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of a global `batch` and their loss weights.

    Rank r takes rows r, r + W, ... so each clip goes to exactly one process. A rank left without
    a row (a batch smaller than W) gets the batch's first row with weight 0: every process must
    run forward and backward at every step, or DistributedDataParallel would wait forever.
    """
    mine = batch[rank::world_size]
    if len(mine) == 0:
        return batch[:1], np.zeros(1, dtype=np.float32)
    return mine, np.ones(len(mine), dtype=np.float32)


def fixed_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
