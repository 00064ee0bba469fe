"""Where the cache lives on disk: creating ``--out``, and a full disk as one line, not a traceback.

A write that fails for lack of space (ENOSPC, a quota's EDQUOT, or EFBIG past ``ulimit -f``)
stops the extraction: the shard being written is discarded by the writer, every complete shard
stays, and the same command resumes once space is freed.
"""

from __future__ import annotations

import errno
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stepcli.errors import StepcliError

NO_SPACE = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file size limit reached (ulimit -f)",
            errno.EDQUOT: "disk quota exceeded"}  # fmt: skip
# HDF5 reports the errno only in its message: "... errno = 28, error message = 'No space left on device' ..."
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def make_cache_dir(out: Path) -> None:
    """Create ``--out`` (and its parents), or say in one line why it cannot be a cache directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StepcliError(f"--out {out} is a file, not a directory; choose a directory for the cache")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise StepcliError(f"--out {out} cannot be used as a cache directory ({_reason(err)})") from None


def error_number(err: BaseException) -> int | None:
    """The errno of `err`, also when h5py wrapped it into its message (as an OSError or RuntimeError)."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno
    match = _HDF5_ERRNO.search(str(err))
    return int(match.group(1)) if match else None


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError | RuntimeError) and error_number(err) in NO_SPACE


@contextmanager
def disk_full_stops(out: Path) -> Iterator[None]:
    """Turn a failed write for lack of space into a one-line error that says how to resume."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        raise StepcliError(
            f"writing the cache {out} failed: {NO_SPACE[error_number(err)]}; the shard being written was "
            "discarded and complete shards are kept: free space and rerun the same command to resume"
        ) from None


def _reason(err: OSError) -> str:
    return err.strerror or str(err).splitlines()[0]


def ignore_file_size_signal() -> None:
    """Past ``ulimit -f`` the kernel sends SIGXFSZ, which kills the process without a word; ignored,
    the write fails with EFBIG instead and `disk_full_stops` explains it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
