"""Direct chunk reads: a clip view's tokens copied straight from the shard file into the batch.

Each clip view is one uncompressed HDF5 chunk (the writer chunks ``tokens`` so), and a complete
shard never changes, so where each chunk lies in its file can be asked of HDF5 once (`h5py`'s
chunk index) and every later read is one positioned read (`pread`) from the page cache into the
batch array: no HDF5 selection machinery and no chunk cache, which is what held streamed reads at
about half the speed of a plain sequential read. Chunks that lie one after another in the file
and in the batch (evaluation reads rows in storage order) are read as one slab. The file is not
mapped into memory: mapped pages, once read, count in the process's resident memory, which would
then grow to the size of the cache over a streamed epoch. A dataset that does not qualify
(compressed, another chunking, another byte order) is read through h5py as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np


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


def open_file(path: Path) -> int:
    """A read-only descriptor of the file, for `copy_chunks` (positioned reads: safe to share)."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))


def copy_chunks(fd: int, first: int, count: int, out: np.ndarray) -> None:
    """Read `count` chunks that lie back to back from file offset `first` of `fd` into `out`
    (C-contiguous, one chunk per entry): one read for the slab."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], first + done)
        if got == 0:
            size = os.fstat(fd).st_size
            raise OSError(f"a token chunk lies past the end of the file ({size} bytes): is it truncated?")
        done += got
