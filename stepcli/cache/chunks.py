"""Direct chunk reads: a clip view's tokens read straight from the shard file into the batch.

Each clip view is one uncompressed HDF5 chunk (the writer chunks ``tokens`` so), and a complete
shard never changes, so where each chunk lies in its file can be asked of HDF5 once (`h5py`'s
chunk index) and every later read is one positional read (`os.preadv`) of those bytes into the
batch array: no HDF5 selection machinery, no chunk cache, and no mapped pages that would pile up
in the process's resident memory over a streamed epoch. Chunks that lie one after another in the
file and in the batch (evaluation reads rows in storage order) are one read. A reader that knows
what it reads next asks the kernel for it ahead (`advise_ahead`, POSIX_FADV_WILLNEED): a cold
shuffled epoch then keeps many reads in flight instead of waiting on one at a time. A dataset
that does not qualify (compressed, another chunking, another byte order), or a platform without
`preadv`, is read through h5py as before.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

READ_AHEAD_BYTES = 16 << 20  # token bytes a streamed reader asks the kernel to fetch before it needs them
DIRECT = hasattr(os, "preadv")  # positional reads into a buffer (Linux, the BSDs, macOS)


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


def runs(files: np.ndarray, starts: np.ndarray, size: int) -> list[tuple[int, int]]:
    """`(first, end)` slots of each run of chunks of `size` bytes that lie back to back in one file."""
    cuts = np.flatnonzero((np.diff(files) != 0) | (np.diff(starts) != size)) + 1
    bounds = [0, *cuts.tolist(), len(starts)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16


def read_chunks(fd: int, first: int, out: memoryview | list[memoryview]) -> None:
    """Fill `out` with the bytes at file offset `first` of `fd` (one run of chunks): one buffer, or
    a list of buffers that the run's bytes fill in turn (a scattered read, IOV_MAX at a time)."""
    parts = [out] if isinstance(out, memoryview) else out
    for k in range(0, len(parts), IOV_MAX):
        batch = parts[k : k + IOV_MAX]
        want = sum(len(p) for p in batch)
        done = os.preadv(fd, batch, first)
        if done < want:  # a regular file returns short only at its end, or on a signal: finish piece by piece
            done = _finish(fd, first, batch, done)
        if done != want:
            raise OSError(f"a token chunk lies past the end of the file at byte {first}: is it truncated?")
        first += want


def _finish(fd: int, first: int, parts: list[memoryview], done: int) -> int:
    """Complete a short scattered read that stopped after `done` bytes; the bytes read in all."""
    offset = 0
    for part in parts:
        end = offset + len(part)
        while done < end:
            more = os.preadv(fd, [part[done - offset :]], first + done)
            if more <= 0:
                return done
            done += more
        offset = end
    return done


def advise_ahead(fd: int, first: int, length: int) -> None:
    """Ask the kernel to start reading `length` bytes at `first` of `fd` now, without waiting."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, first, length, os.POSIX_FADV_WILLNEED)
