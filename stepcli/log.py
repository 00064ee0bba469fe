"""The ``stepcli`` logger: the library logs, the command line decides how much of it is shown.

Every module logs through ``logging.getLogger(__name__)`` (children of ``stepcli``). The CLI calls
`set_verbosity` once per invocation (``-q``: warnings only, default: progress and results, ``-v``:
debug too) and attaches one handler to the ``stepcli`` logger; nothing here touches the root
logger, so an application that embeds stepcli keeps its own logging set-up. Used as a library
without `set_verbosity`, only warnings reach the screen (Python's default).
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("stepcli")
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (click's test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def set_verbosity(verbosity: int) -> None:
    """-1 quiet, 0 normal, 1 verbose; installs the stderr handler on the ``stepcli`` logger once."""
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrHandler())
        LOGGER.propagate = False  # shown once, by our handler, whatever the root logger does
    LOGGER.setLevel(LEVELS[max(-1, min(1, verbosity))])


def shows_progress() -> bool:
    """Progress bars and per-epoch lines are INFO: hidden by ``-q`` and by default in library use."""
    return LOGGER.isEnabledFor(logging.INFO)
