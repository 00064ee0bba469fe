"""One writer per (cache, rank): an exclusive ``flock`` on ``.lock.r<rank>`` in the cache directory.

The kernel drops the lock when its process dies, however it dies, so a SIGKILLed extraction never
blocks the rerun that resumes it, and no stale lock file has to be cleaned up by hand. Different
ranks lock different files and run side by side; a second process on the same rank stops at once
and names the process that holds the cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from stepcli.errors import StepcliError

LOCK_PREFIX = ".lock.r"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_inherited_locks() -> None:
    """In a forked child (a DataLoader decoding worker): close its copies of the parent's lock
    descriptors. A flock lives while any copy is open, so otherwise a SIGKILLed extraction's lock
    would outlive it in its workers until they notice; closing a copy never releases the parent's."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


@dataclass(frozen=True)
class Holder:
    """Who holds a rank's lock, written into the lock file so that the refused process can say."""

    pid: int
    host: str
    rank: int
    world_size: int
    started: str
    command: str

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (rank {self.rank}/{self.world_size}, since {self.started})"

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # written a moment from now, or by another version: say less, still refuse


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _current_holder(path: Path, patience: float = 2.0) -> Holder | None:
    """The holder's record: the lock is taken a moment before the record is written, and until then
    the file is empty or names a dead earlier holder, so wait briefly for a live one."""
    deadline = time.monotonic() + patience
    while True:
        holder = Holder.read(path)
        if holder is not None and (holder.host != socket.gethostname() or _alive(holder.pid)):
            return holder
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def lock_path(cache_dir: Path, rank: int) -> Path:
    return Path(cache_dir) / f"{LOCK_PREFIX}{rank:03d}"


class CacheLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, cache_dir: Path, rank: int, world_size: int) -> CacheLock:
        """Lock rank `rank` of `cache_dir`, or raise naming the process that has it.

        A process of another world size writing the same cache is refused too: its ranks would
        share out the clips differently and both would extract some of them.
        """
        path = lock_path(cache_dir, rank)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _current_holder(path)
            who = holder.describe() if holder else "another process"
            raise StepcliError(
                f"{cache_dir} (rank {rank}) is being written by {who}; wait for it to finish, or stop it "
                "and rerun to resume"
            ) from None
        _HELD.add(fd)
        lock = cls(path, fd)
        try:
            _refuse_other_world_size(Path(cache_dir), rank, world_size)
        except StepcliError:
            lock.release()
            raise
        me = Holder(os.getpid(), socket.gethostname(), rank, world_size, time.strftime("%Y-%m-%d %H:%M:%S"),
                    " ".join(sys.argv))  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        return lock

    def release(self) -> None:
        if self._fd >= 0:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> CacheLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_held(cache_dir: Path, rank: int) -> bool:
    """Whether a live process holds rank `rank` of `cache_dir` (its temporary shard is then not stale)."""
    path = lock_path(cache_dir, rank)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _refuse_other_world_size(cache_dir: Path, rank: int, world_size: int) -> None:
    for path in sorted(cache_dir.glob(f"{LOCK_PREFIX}*")):
        suffix = path.name.removeprefix(LOCK_PREFIX)
        if not suffix.isdigit() or int(suffix) == rank or not is_held(cache_dir, int(suffix)):
            continue
        holder = Holder.read(path)
        if holder is not None and holder.world_size != world_size:
            raise StepcliError(
                f"{cache_dir} is being written by {holder.describe()} with {holder.world_size} processes, "
                f"this one has {world_size}; wait for that run to finish, or stop it and rerun"
            )


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting for whoever has it: for work that a second process
    should reuse rather than redo (the demo videos that two extractions generate into one folder)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StepcliError(f"cannot write to {path.parent} ({err.strerror or err}); choose another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
