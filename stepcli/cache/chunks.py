"""Direct chunk reads: a clip view's tokens copied straight from the mapped shard file into the batch.

Each clip view is one uncompressed HDF5 chunk (the writer chunks ``tokens`` so), and a complete
shard never changes, so where each chunk lies in its file can be asked of HDF5 once (`h5py`'s
chunk index), the file mapped read-only, and every later read is one copy from the page cache
into the batch array: no HDF5 selection machinery, no chunk cache and no system call per clip,
which is what held streamed reads at about half the speed of a plain sequential read. Chunks that
lie one after another in the file and in the batch (evaluation reads rows in storage order) are
copied as one slab. Mapped pages once read count in the process's resident memory, so the reader
drops them from its mapping (`release`) every `RESIDENT_BYTES` it copies: they stay in the page
cache, and a streamed epoch holds at most that much of the cache in RSS, not all of it. A reader
that knows what it reads next asks the kernel for it ahead (`advise_ahead`, MADV_WILLNEED): a cold
shuffled epoch then keeps many reads in flight instead of waiting on one page fault at a time. A dataset
that does not qualify (compressed, another chunking, another byte
order) is read through h5py as before.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import h5py
import numpy as np

RESIDENT_BYTES = 256 << 20  # token bytes copied from mapped shards between two releases
READ_AHEAD_BYTES = 16 << 20  # token bytes a streamed reader asks the kernel to fetch before it needs them


def chunk_offsets(dataset: h5py.Dataset) -> np.ndarray | None:
    """File offset of each clip view's chunk, `[V, K]` (`[V, 1]` for a v1 dataset), or None when
    the tokens cannot be read directly (not one raw little-endian float16 chunk per clip view)."""
    shape, chunks = dataset.shape, dataset.chunks
    per_view = (1,) * (len(shape) - 3) + tuple(shape[-3:])
    if chunks != per_view or dataset.compression or dataset.dtype != np.dtype("<f2") or dataset.id.get_offset():
        return None  # contiguous datasets have an offset but only one "chunk"; they are read through h5py
    views = shape[1] if len(shape) == 5 else 1
    offsets = np.full((shape[0], views), -1, dtype=np.int64)

    def record(info) -> None:
        if info.filter_mask == 0 and info.byte_offset is not None:
            offsets[info.chunk_offset[0], info.chunk_offset[1] if len(shape) == 5 else 0] = info.byte_offset

    try:
        dataset.id.chunk_iter(record)
    except (AttributeError, RuntimeError):  # an HDF5 before 1.12.3 lacks the iterator
        for i in range(dataset.id.get_num_chunks()):
            record(dataset.id.get_chunk_info(i))
    return None if (offsets < 0).any() else offsets


def map_file(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """The whole file mapped read-only, and as a `uint8` array backed by the page cache (no copy)."""
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return mapping, np.frombuffer(mapping, dtype=np.uint8)


def release(mapping: mmap.mmap) -> None:
    """Drop the mapping's pages from this process's resident memory (the page cache keeps them;
    the next read maps them again); a no-op where madvise is missing."""
    if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def copy_chunks(mapped: np.ndarray, first: int, count: int, out: np.ndarray) -> None:
    """Copy `count` chunks that lie back to back from file offset `first` of `mapped` into `out`
    (C-contiguous, one chunk per entry): one slab copy."""
    size = out[0].nbytes
    if first + count * size > len(mapped):
        raise OSError(f"a token chunk lies past the end of the file ({len(mapped)} bytes): is it truncated?")
    out.reshape(count * size).view(np.uint8)[:] = mapped[first : first + count * size]


def advise_ahead(mapping: mmap.mmap, starts: np.ndarray, size: int) -> None:
    """Ask the kernel to start reading the chunks of `size` bytes at file offsets `starts` now
    (MADV_WILLNEED, without waiting); ranges that touch are merged. A no-op where madvise is missing."""
    if not len(starts) or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_WILLNEED"):
        return
    page = mmap.PAGESIZE
    begin = np.sort(np.asarray(starts, dtype=np.int64))
    begin, end = begin - begin % page, np.minimum(begin + size, len(mapping))
    merged_begin, merged_end = [int(begin[0])], [int(end[0])]
    for b, e in zip(begin[1:].tolist(), end[1:].tolist(), strict=True):
        if b <= merged_end[-1]:
            merged_end[-1] = max(merged_end[-1], e)
        else:
            merged_begin.append(b)
            merged_end.append(e)
    for b, e in zip(merged_begin, merged_end, strict=True):
        mapping.madvise(mmap.MADV_WILLNEED, b, e - b)
