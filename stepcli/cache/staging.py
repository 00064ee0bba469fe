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

import numpy as np

from stepcli.cache.reader import FeatureCache

SLOTS = 2  # buffers: a batch spans at most two groups when no group but the last is smaller than a batch


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

    def tokens(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), T, P+N, D]`` float16 of `rows`, from the staged groups (a row in no group is
        read where it lies)."""
        rows = np.asarray(rows, dtype=np.int64)
        of = self.group_of[rows]
        needed = [int(g) for g in np.unique(of) if g >= 0]
        for g in needed:
            self._stage(g, keep=needed)
        if len(needed) == 1 and (of >= 0).all():
            slots = self.slot_of[rows]
            tokens = self.held[needed[0]][1]
            if len(rows) and slots[-1] - slots[0] == len(rows) - 1 and (np.diff(slots) == 1).all():
                return tokens[slots[0] : slots[-1] + 1]  # the usual batch: a slice, no copy
            return tokens[slots]
        out = np.empty((len(rows), *self.cache.clip_shape), dtype=np.float16)
        for g in needed:
            mine = of == g
            out[mine] = self.held[g][1][self.slot_of[rows[mine]]]
        loose = of < 0
        if loose.any():
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
        stored = np.argsort(order, kind="stable")  # read in storage order, each view to its place
        buffer = self.cache.buffer(slot, len(order))
        rows = order[stored]
        self.held[g] = (slot, self.cache.tokens(rows, self.view_of[rows], out=buffer, slots=stored))
        if g + 1 < len(self.groups):
            ahead = self.groups[g + 1]
            self.cache.prefetch(ahead, self.view_of[ahead])
