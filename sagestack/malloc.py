"""Keep freed request buffers in the heap of a process that serves big bodies over and over."""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_below: int, trim_above: int) -> None:
    """Serve allocations up to ``mmap_below`` bytes from the heap, and give the heap's free top back to
    the kernel only past ``trim_above`` bytes.

    By default glibc maps blocks over 128 KiB on their own (its threshold then adapts) and
    trims the heap top past twice that, so a process whose requests allocate and free a
    few megabytes each faults them in again every time: ~700 page faults, several ms on
    a VM, for the tutorial's 6,513-row request. A no-op where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, mmap_below)
        mallopt(_M_TRIM_THRESHOLD, trim_above)
