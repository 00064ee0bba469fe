"""Shared memory (/dev/shm), through which worker processes pass tensors: how big and how full it
is, for the messages that name it as a cause."""

from __future__ import annotations

import shutil

from stepcli.units import human

SHM = "/dev/shm"
# what torch and the kernel say when a shared-memory file cannot be made as large as a tensor
_SHM_WORDS = ("shared memory", "/torch_", "no space left", "file too large", "unable to resize file")


def shm_state(path: str = SHM) -> str:
    """'/dev/shm: 64.0 MiB, 1.5 MiB free', or that there is none."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return f"no {path} on this machine"
    return f"{path}: {human(usage.total)}, {human(usage.free)} free"


def shm_failure(reason: str) -> str:
    """The explanation and fix to append when `reason` is a failed shared-memory transfer, else ''."""
    if not any(word in reason.lower() for word in _SHM_WORDS):
        return ""
    return (f": shared memory is full or too small ({shm_state()}, or a file size limit: ulimit -f); "
            "rerun with --workers 0, or with a larger /dev/shm (docker run --shm-size=...)")  # fmt: skip
