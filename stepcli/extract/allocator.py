"""Freed memory kept by the C allocator across backbone calls, where the allocator is glibc's.

A CPU forward pass allocates activation tensors of megabytes and frees them at the end of the
call. glibc maps every block above its mmap threshold afresh, so each call pays for zeroed pages
faulted in and given back (system time, minor faults), and it trims the heap's top after each
free. Raising the threshold to its ceiling and keeping the freed top lets the next call reuse the
same pages. It changes where tensors live, never what is computed: the tokens stay bit for bit.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
# glibc's ceiling for the mmap threshold on 64-bit (HEAP_MAX / 2): a block above it is always mapped
MMAP_CEILING = 32 * 1024 * 1024
SETTINGS = (
    (M_MMAP_THRESHOLD, MMAP_CEILING),
    (M_TRIM_THRESHOLD, 2**31 - 1),  # freed memory at the heap's top is kept (up to 2 GiB), not given back
    (M_TOP_PAD, 1024**3),  # and the heap grows in steps of a gigabyte of address space
)
# what the user set for glibc in the environment is theirs: left alone
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
_applied: list[bool] = []


def keep_freed_memory() -> bool:
    """Tune glibc's malloc (once per process) so freed activations are reused; False where the
    allocator is not glibc, or the environment already tunes it."""
    if _applied:
        return _applied[0]
    applied = False
    if not any(name in os.environ for name in ENVIRONMENT):
        try:
            libc = ctypes.CDLL(None)
            glibc = hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")
        except OSError:
            glibc = False
        if glibc:
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            applied = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    _applied.append(applied)
    log.debug("glibc malloc tuned to keep freed memory: %s", applied)
    return applied
