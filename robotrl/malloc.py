"""Keep freed memory in the process for reuse (glibc), so a large tensor allocated again is not faulted in again.

glibc's malloc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it to
the kernel on ``free``. A pixel update allocates such blocks by the dozen (a batch of 256 x 6 stacked 84x84 frames
as float is 390 MB, each conv activation 80-330 MB) and frees them again, so every update page-faults them in again,
one 4 KB page at a time: that was ~45% of an MR.Q pixel update on this CPU (``bench/malloc_reuse.py``). With mmap
off and a high trim threshold, freed blocks stay in the heap and the next update reuses them. PyTorch's CPU
performance guide gets the same from an ``LD_PRELOAD``-ed jemalloc/tcmalloc; this needs no extra library. The cost
is a higher resident size (the process keeps its peak), measured beside the speed in docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_KEEP_UP_TO = 2**31 - 1  # bytes of free memory at the heap's top kept before trimming (mallopt takes an int)


def reuse_freed_memory(enabled: bool) -> str:
    """Serve large allocations from the heap and keep freed memory for reuse (process-wide, for the process's life).

    Returns what was done, for the run's console. ``enabled=False`` leaves malloc as it is. Off Linux/glibc nothing is
    changed and the returned line says so.
    """
    if not enabled:
        return "the C library's default (reuse_freed_memory=false)"
    if not sys.platform.startswith("linux"):
        return f"the C library's default ({sys.platform}: no glibc mallopt)"
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
    if mallopt is None:
        return "the C library's default (it has no mallopt)"
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO) != 1:
        return "the C library's default (mallopt refused the settings)"
    return "freed memory kept for reuse (glibc mallopt: no mmap, trim above 2 GB)"
