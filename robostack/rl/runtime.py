"""Process-wide CPU settings for a learner process. Nothing here runs on import: call it once at
process start (after `torch.set_num_threads`), before the first update.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """glibc only: keep freed heap memory in the process instead of handing it back to the OS.

    A learner update allocates and frees the same multi-MB tensors every step (activations of a
    10-member 256-wide ensemble are 2.6 MB each, a batch of 128 px camera images as float 50 MB).
    By default glibc serves blocks that large with fresh mmap()s and returns freed heap tops to
    the OS, so every step page-faults all of that memory in again. In the 2-core VM this was
    measured in, faults cost ~2 us per 4 KiB page: about a quarter of a pixel update and up to a
    fifth of a 10-critic state update (benchmarks/bench_learner.py --keep-freed-memory). With no
    mmap blocks and no trimming the same memory is reused. The price: the process keeps its peak
    heap (a learner's working set is stable, so that is the steady-state size anyway).

    Returns False (and changes nothing) where glibc's mallopt is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # musl and other libcs: no mallopt
        return False
