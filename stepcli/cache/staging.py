"""Staged reads: an epoch's clips read a group at a time, whole and in storage order.

A shuffled epoch that reads each clip view where it lies pays a positional read per clip: about
20 us a 30 KiB view from the page cache, a random disk read when cold, which is a fraction of
what the same files give read from start to end. When the epoch's order is drawn in groups (see
`stepcli.probe.data.epoch_order`: random blocks of neighbouring clips, shuffled together), each
group is read whole, in storage order, into one of two reused buffers, each clip view straight
to its place in the epoch's order (one scattered read per run of neighbouring chunks), and the
next group is asked of the kernel ahead (POSIX_FADV_WILLNEED). A batch is then a slice of the
buffer: no copy, no fresh memory. Memory: two groups' tokens, whatever the cache's size.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from stepcli.cache.reader import FeatureCache

SLOTS = 2  # buffers: a batch spans at most two groups when no group but the last is smaller than a batch
MAX_READERS = 4  # threads reading a group: one core's copy from the page cache is half of what two do


def reader_threads() -> int:
    """Threads that read a group together: the cores this process may use, at most MAX_READERS. The
    loop waits for the group, so they take no core from the probe; preadv lets go of the GIL."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, min(MAX_READERS, len(affinity(0)) if affinity else os.cpu_count() or 1))


class StagedGroups:
    """Serves rows of an epoch from its `groups` (disjoint, each in the epoch's order), each read
    whole when first needed, with `view_of[row]` the view read of each row (0 when None).

    A batch that is a run of one group's order is returned as a view of the group's buffer, valid
    until the group after next is read: a consumer uses or copies each batch before the next (the
    training loop casts it, or moves it to the device, at once)."""

    def __init__(self, cache: FeatureCache, groups: tuple[np.ndarray, ...], view_of: np.ndarray | None) -> None:
        self.cache, self.groups = cache, groups
        self.view_of = np.zeros(len(cache), dtype=np.int64) if view_of is None else view_of
        self.group_of = np.full(len(cache), -1, dtype=np.int64)
        self.slot_of = np.zeros(len(cache), dtype=np.int64)  # a row's place in its group's order
        for g, rows in enumerate(groups):
            self.group_of[rows] = g
            self.slot_of[rows] = np.arange(len(rows))
        self.held: dict[int, tuple[int, np.ndarray]] = {}  # group -> (buffer slot, its tokens in order)
        self.threads = reader_threads()
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.asked: dict[int, Future | None] = {}  # groups asked of the kernel (in the background)

    def close(self) -> None:
        """Let the reading threads go (the buffers stay with the cache, for the next epoch)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def slices(self, batches: list[np.ndarray]) -> list[tuple[int, int] | None]:
        """Per batch, `(group, first slot)` when it is a run of one group's order (then `tokens` is
        a slice of the group's buffer), else None; for every batch at once, so that the usual batch
        costs no more than the slice."""
        if not batches:
            return []
        rows = np.concatenate(batches)
        of, slots = self.group_of[rows], self.slot_of[rows]
        starts = np.cumsum([0, *(len(b) for b in batches[:-1])])
        step = np.ones(len(rows), dtype=bool)
        step[1:] = (of[1:] == of[:-1]) & (slots[1:] == slots[:-1] + 1)
        step[starts] = of[starts] >= 0  # a batch's first row starts its run
        whole = np.logical_and.reduceat(step, starts) if len(rows) else np.zeros(0, dtype=bool)
        return [(int(of[a]), int(slots[a])) if ok and len(b) else None
                for a, ok, b in zip(starts.tolist(), whole.tolist(), batches, strict=True)]  # fmt: skip

    def tokens(self, rows: np.ndarray, where: tuple[int, int] | None = None) -> np.ndarray:
        """``[len(rows), T, P+N, D]`` float16 of `rows`, from the staged groups (a row in no group is
        read where it lies); `where`: the batch's entry of `slices`, when known."""
        if where is not None:
            g, first = where
            self._stage(g, keep=[g])
            return self.held[g][1][first : first + len(rows)]  # the usual batch: a slice, no copy
        rows = np.asarray(rows, dtype=np.int64)
        of = self.group_of[rows]
        needed = [int(g) for g in np.unique(of) if g >= 0]
        for g in needed:
            self._stage(g, keep=needed)
        out = np.empty((len(rows), *self.cache.clip_shape), dtype=np.float16)
        for g in needed:
            mine = of == g
            out[mine] = self.held[g][1][self.slot_of[rows[mine]]]
        loose = of < 0
        if loose.any():
            self._settle()  # no shard is being opened while these are read
            out[loose] = self.cache.tokens(rows[loose], self.view_of[rows[loose]])
        return out

    def _stage(self, g: int, keep: list[int]) -> None:
        """Read group `g` whole into a free reused buffer (dropping the groups no longer needed),
        then ask the kernel for the next group."""
        if g in self.held:
            return
        for old in [h for h in self.held if h not in keep]:
            del self.held[old]
        used = {slot for slot, _ in self.held.values()}
        slot = min(set(range(SLOTS + len(used))) - used)
        order = self.groups[g]
        self._settle()  # no other thread is opening a shard or asking the kernel
        if g not in self.asked and not self.cache.resident(order, self.view_of[order]):  # the first group
            self.cache.prefetch(order, self.view_of[order])
        stored = np.argsort(order, kind="stable")  # read in storage order, each view to its place
        buffer = self.cache.buffer(slot, len(order))
        rows = order[stored]
        views = self.view_of[rows]
        self.cache.open_shards(rows)
        read_directly = self.cache.direct_shards  # a list built per call: once per group
        direct = all(read_directly[s] for s in np.unique(self.cache.shard_of(rows)).tolist())
        if self.pool is None or not direct:  # a shard read through h5py is read by one thread
            self.cache.tokens(rows, views, out=buffer, slots=stored)
        else:  # each thread a stretch of the files
            parts = np.array_split(np.arange(len(rows)), self.threads)
            read = lambda k: self.cache.tokens(rows[k], views[k], out=buffer, slots=stored[k])  # noqa: E731
            list(self.pool.map(read, parts))
        self.held[g] = (slot, buffer.array)
        ahead = self.groups[g + 1] if g + 1 < len(self.groups) else ()
        self.asked[g + 1] = None
        if len(ahead) and not self.cache.resident(ahead, self.view_of[ahead]):  # ask for it while this one is served
            self.cache.open_shards(ahead)
            asking = self.cache.prefetch if self.pool is None else lambda *a: self.pool.submit(self.cache.prefetch, *a)
            self.asked[g + 1] = asking(ahead, self.view_of[ahead])

    def _settle(self) -> None:
        """Wait for the kernel to have been asked for every group asked for (its shards opened)."""
        for g, asking in self.asked.items():
            if asking is not None:
                asking.result()
                self.asked[g] = None
