"""`--compile`: a probe's forward through torch.compile, and eager where that cannot work.

On a GPU a small probe's step is mostly kernel launches, which compiling fuses; on a CPU it
needs a C++ toolchain and pays off little. Compilation happens at the first call, so that is
where a failure shows: the run then warns once and carries on eagerly, with the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class Compiled:
    """Calls `module` compiled with `backend`; after a failed compilation, `module` itself."""

    def __init__(self, module: nn.Module, backend: str | Callable = "inductor") -> None:
        self.module, self.compiled = module, torch.compile(module, backend=backend)
        self.failed = False

    def __call__(self, *args: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as err:  # noqa: BLE001 - any compiler failure: fall back rather than fail the run
                self.failed = True
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                log.warning(
                    f"warning: --compile: cannot compile {type(self.module).__name__} ({first}); running eagerly"
                )
        return self.module(*args)


def forward_of(module: nn.Module, compile: bool) -> Callable:
    """What a training step calls: `module`, or `Compiled(module)` with `--compile`."""
    return Compiled(module) if compile else module
