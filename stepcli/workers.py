"""Worker processes that are watched: a DataLoader whose workers can die, or fail to pass a result
back, without the main process waiting forever.

A DataLoader worker hands its result to a feeder thread that pickles it into the result queue,
moving every tensor into shared memory (/dev/shm) on the way. When that fails (a full or small
/dev/shm, ``ulimit -f``) the thread prints a traceback and drops the result, and the main process
waits for it forever. So a worker here moves its tensors into shared memory itself, in its main
thread, where a failure can be caught; a result that does not fit goes through the queue's pipe
as plain arrays instead (the same bytes, slower; one warning). Every worker also writes on a
`WorkerBoard` (shared memory made before the workers start) what it is doing, and the main
process polls the queue every `POLL_SECONDS`: a dead worker, a result that never arrived and a
failed transfer are one `StepcliError` line within seconds; a stall is a warning saying what each
worker is doing, and never stops the run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_convert, get_worker_info

from stepcli.errors import StepcliError
from stepcli.private import is_loader_timeout, loader_processes, on_queue_feeder_error, shutdown_loader
from stepcli.shm import shm_failure, shm_state

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often the waiting main process looks at its workers
LOST_SECONDS = 10.0  # a result finished this long ago that has not arrived is lost
STALL_SECONDS = 300.0  # no item for this long: say what each worker is doing
MESSAGE_BYTES = 300
_PID, _INDEX, _SINCE, _DONE_INDEX, _DONE_AT = range(5)
_FIELDS = 5


class WorkerBoard:
    """What each worker is doing, in shared memory written by the workers and read by the main process."""

    def __init__(self, workers: int, items: int) -> None:
        ctx = multiprocessing.get_context()
        self.workers = workers
        self.slots = ctx.RawArray("d", workers * _FIELDS)  # pid, item, since, last item done, when
        self.done_at = ctx.RawArray("d", max(items, 1))  # when each item was handed to the queue
        self.failures = ctx.RawArray("c", workers * MESSAGE_BYTES)  # why a worker could not pass a result back
        for w in range(workers):
            self.slots[w * _FIELDS + _INDEX] = self.slots[w * _FIELDS + _DONE_INDEX] = -1

    def get(self, worker: int, field: int) -> float:
        return self.slots[worker * _FIELDS + field]

    def put(self, worker: int, field: int, value: float) -> None:
        self.slots[worker * _FIELDS + field] = value

    def fail(self, worker: int, message: str) -> None:
        data = message.encode(errors="replace")[: MESSAGE_BYTES - 1]
        self.failures[worker * MESSAGE_BYTES : worker * MESSAGE_BYTES + len(data)] = data

    def failure(self, worker: int) -> str:
        raw = bytes(self.failures[worker * MESSAGE_BYTES : (worker + 1) * MESSAGE_BYTES])
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def doing(self, describe: Callable[[int], str], what: str) -> str:
        """One clause per worker: what it works on, or what it finished, and for how long."""
        now, parts = time.monotonic(), []
        for w in range(self.workers):
            pid, index, since = int(self.get(w, _PID)), int(self.get(w, _INDEX)), self.get(w, _SINCE)
            done, done_at = int(self.get(w, _DONE_INDEX)), self.get(w, _DONE_AT)
            name = f"{what} {w} (pid {pid})" if pid else f"{what} {w} (starting)"
            if index >= 0 and index != done:
                parts.append(f"{name}: on {describe(index)} for {now - since:.0f} s")
            elif done >= 0:
                parts.append(f"{name}: waiting, finished {describe(done)} {now - done_at:.0f} s ago")
            else:
                parts.append(f"{name}: no item yet")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Piped:
    """A tensor that did not fit in shared memory, sent by value through the pipe."""

    array: np.ndarray
    reason: str


@dataclass(frozen=True)
class _Failed:
    """A user-facing error raised in a worker, passed back as one line instead of a wrapped traceback."""

    message: str


_ME: tuple[WorkerBoard, int] | None = None  # in a worker: its board and number


class _Watched(Dataset):
    """`dataset` whose items are noted on the board before they are made."""

    def __init__(self, dataset: Dataset, board: WorkerBoard) -> None:
        self.dataset, self.board = dataset, board

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        if _ME is not None:
            board, w = _ME
            board.put(w, _SINCE, time.monotonic())
            board.put(w, _INDEX, i)
        try:
            return self.dataset[i]
        except StepcliError as err:
            return _Failed(str(err))


def _worker_init(worker: int) -> None:
    """Runs in each worker before its first item: one thread (the cores belong to the main
    process), its pid on the board, and the queue's feeder errors recorded instead of printed."""
    global _ME
    torch.set_num_threads(1)
    info = get_worker_info()
    board = info.dataset.board  # type: ignore[union-attr]
    _ME = (board, worker)
    board.put(worker, _PID, os.getpid())

    def feeder_failed(err: BaseException, _obj: object) -> None:
        board.fail(worker, f"{type(err).__name__}: {' '.join(str(err).split())}")

    on_queue_feeder_error(feeder_failed)


def _hand_over(item: Any) -> Any:
    """In the worker: the item as tensors in shared memory, or as arrays where shared memory fails."""
    item = default_convert(item)
    if _ME is None:
        return item
    item = _share(item)
    board, w = _ME
    board.done_at[int(board.get(w, _INDEX))] = time.monotonic()
    board.put(w, _DONE_AT, time.monotonic())
    board.put(w, _DONE_INDEX, board.get(w, _INDEX))
    return item


def _share(item: Any) -> Any:
    if isinstance(item, torch.Tensor):
        try:
            return item.share_memory_()
        except (RuntimeError, OSError) as err:
            return _Piped(item.numpy(), " ".join(str(err).split()))
    if isinstance(item, dict):
        return {k: _share(v) for k, v in item.items()}
    if isinstance(item, list | tuple) and not hasattr(item, "_fields"):
        return type(item)(_share(v) for v in item)
    return item


def _unpack(item: Any, piped: list[str]) -> Any:
    """In the main process: arrays sent by value back into tensors; their reason into `piped`."""
    if isinstance(item, _Piped):
        piped.append(item.reason)
        return torch.from_numpy(item.array)
    if isinstance(item, dict):
        return {k: _unpack(v, piped) for k, v in item.items()}
    if isinstance(item, list | tuple) and not hasattr(item, "_fields"):
        return type(item)(_unpack(v, piped) for v in item)
    return item


@dataclass(frozen=True)
class Watch:
    """How a command names its workers and items in its messages."""

    what: str  # "decoding worker"
    describe: Callable[[int], str] = lambda i: f"item {i}"
    resume: str = "rerun the same command"
    stall_seconds: float = STALL_SECONDS


def watched_items(dataset: Dataset, workers: int, watch: Watch, prefetch: int | None = None) -> Iterator[Any]:
    """Items 0, 1, ... of `dataset` in order, made by `workers` processes (or in this one for 0)."""
    if workers == 0:
        for i in range(len(dataset)):  # type: ignore[arg-type]
            item = default_convert(dataset[i])
            yield item
        return
    try:
        board = WorkerBoard(workers, len(dataset))  # type: ignore[arg-type]
    except OSError as err:  # its few bytes per item live in /dev/shm (or the temp dir) too
        reason = " ".join(str(err).split())
        raise StepcliError(f"cannot share the {watch.what}s' state ({reason}){shm_failure(reason)}") from None
    loader = DataLoader(_Watched(dataset, board), batch_size=None, num_workers=workers, worker_init_fn=_worker_init,
                        collate_fn=_hand_over, prefetch_factor=prefetch, timeout=POLL_SECONDS)  # fmt: skip
    it = iter(loader)
    if threading.current_thread() is threading.main_thread():
        # torch's SIGCHLD handler raises wherever the main process is (in the middle of writing a
        # shard); without it a dead worker is noticed at the next poll, inside this loop
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    dog = _Watchdog(board, watch)
    warned = False
    try:
        dog.start()
        for received in range(len(dataset)):  # type: ignore[arg-type]
            item = _next(it, board, received, watch)
            dog.last = time.monotonic()
            if isinstance(item, _Failed):
                raise StepcliError(item.message)
            piped: list[str] = []
            item = _unpack(item, piped)
            if piped and not warned:
                warned = True
                log.warning(f"WARNING: {watch.what}s cannot put their results in shared memory ({piped[0]}; {shm_state()}): "
                            "passing them through a pipe instead (the same data, slower); --workers 0 or a larger "
                            "/dev/shm avoids this")  # fmt: skip
            yield item
    finally:
        dog.stop.set()
        shutdown_loader(it)


def _next(it: Any, board: WorkerBoard, index: int, watch: Watch) -> Any:
    """The next result; between polls, stop with one line when it can no longer come."""
    while True:
        try:
            return next(it)
        except StopIteration:
            raise
        except Exception as err:  # a timeout, a dead worker, or a transfer cut short by one (ConnectionReset)
            timed_out = is_loader_timeout(err)
            dead = _dead_workers(it, wait=0.0 if timed_out else 2.0)
            if dead:
                raise StepcliError(_death(dead[0], board, watch)) from None
            if not timed_out:
                raise
        for w in range(board.workers):
            if board.failure(w):
                reason = board.failure(w)
                raise StepcliError(
                    f"{watch.what} {w} could not pass {watch.describe(int(board.get(w, _DONE_INDEX)))} back to "
                    f"the main process ({reason}){shm_failure(reason)}; {watch.resume}"
                )
        finished = board.done_at[index]
        if finished and time.monotonic() - finished > LOST_SECONDS:
            raise StepcliError(
                f"the result of {watch.describe(index)} was made {time.monotonic() - finished:.0f} s ago but never "
                f"reached the main process (a {watch.what} could not pass it back); {watch.resume}"
            )


def _dead_workers(it: Any, wait: float) -> list[tuple[int, Any]]:
    """The workers that exited, waiting up to `wait` s for one: a transfer fails before its sender is reaped."""
    deadline = time.monotonic() + wait
    while True:
        dead = [(w, p) for w, p in enumerate(loader_processes(it)) if p.exitcode is not None]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.05)


def _death(dead: tuple[int, Any], board: WorkerBoard, watch: Watch) -> str:
    """The one line for a worker that died: how, on which item, and what to do."""
    w, process = dead
    code = process.exitcode
    index = int(board.get(w, _INDEX))
    on = f" on {watch.describe(index)}" if index >= 0 and index != int(board.get(w, _DONE_INDEX)) else ""
    name = (signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}") if code < 0 else ""
    how = f"was killed by {name}" if code < 0 else f"exited with status {code}"
    hint = {
        "SIGKILL": " (out of memory? `dmesg` says; fewer --workers or a smaller --batch-size need less)",
        "SIGBUS": shm_failure("shared memory"),
        "SIGSEGV": " (the decoder crashed)",
    }.get(name, "")
    return f"{watch.what} {w} (pid {process.pid}) {how}{on}{hint}; {watch.resume}"


class _Watchdog(threading.Thread):
    """Warns, and never stops anything, when no item arrived for `stall_seconds`."""

    def __init__(self, board: WorkerBoard, watch: Watch) -> None:
        super().__init__(name="stepcli-watchdog", daemon=True)
        self.board, self.watch = board, watch
        self.stop = threading.Event()
        self.last = time.monotonic()

    def run(self) -> None:
        stall = self.watch.stall_seconds
        if stall <= 0:
            return
        warned_at = 0.0
        while not self.stop.wait(min(stall / 4, 5.0)):
            now = time.monotonic()
            if now - self.last >= stall and now - max(warned_at, self.last) >= stall:
                warned_at = now
                log.warning(f"WARNING: stall: no item taken from the {self.watch.what}s for {now - self.last:.0f} s; "
                            f"{self.board.doing(self.watch.describe, self.watch.what)}")  # fmt: skip
