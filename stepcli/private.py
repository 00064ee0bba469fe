"""Every private name of torch and the standard library that stepcli relies on, in one place.

Each has no public equivalent for what it is used for (a DataLoader's processes and its shutdown, the
text of its timeout, the queue feeder's error hook, the fused AdamW kernel that steps many heads with
their own learning rates and clipping factors). `tests/test_private.py` names the torch release these
were checked against, exercises each one, and fails with that release named on another.
"""

from __future__ import annotations

import multiprocessing.queues
from collections.abc import Callable
from typing import Any

import torch

#: the torch release every name here was checked against (constraints.txt pins it)
CHECKED_TORCH = "2.14.1"
#: how torch's DataLoader words a `timeout=` that ran out
_TIMEOUT_TEXT = "DataLoader timed out"


def loader_processes(iterator: Any) -> list[Any]:
    """The worker processes of a multi-process DataLoader iterator (empty for one without)."""
    return list(getattr(iterator, "_workers", []))


def shutdown_loader(iterator: Any) -> None:
    """Stop a DataLoader iterator's workers now, as its own `__del__` would later."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def is_loader_timeout(err: BaseException) -> bool:
    """Whether `err` is a DataLoader's `timeout=` running out (torch raises a bare RuntimeError)."""
    return isinstance(err, RuntimeError) and str(err).startswith(_TIMEOUT_TEXT)


def on_queue_feeder_error(handler: Callable[[BaseException, object], None]) -> None:
    """In this process, call `handler(error, object)` when a multiprocessing queue's feeder thread
    cannot pickle or send an object, instead of printing a traceback and dropping it."""
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(handler)  # type: ignore[method-assign]


def fused_adamw(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                step: torch.Tensor, *, lr: float, betas: tuple[float, float], eps: float,
                grad_scale: torch.Tensor) -> None:  # fmt: skip
    """One AdamW step (no weight decay, which the caller applies) of `param` in place, with the
    gradient divided by `grad_scale`: torch.optim.AdamW's fused kernel, one call per head."""
    torch._fused_adamw_(
        [param], [grad], [exp_avg], [exp_avg_sq], [], [step], lr=lr, beta1=betas[0], beta2=betas[1],
        weight_decay=0.0, eps=eps, amsgrad=False, maximize=False, grad_scale=grad_scale, found_inf=None,
    )  # fmt: skip
