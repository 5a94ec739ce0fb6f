"""glibc's allocator told to give large blocks back to the system when they are freed.

A worker holds one HLS/DASH segment at a time (a few MiB, at most the segment limit), but glibc
raises its mmap threshold each time such a block is freed (up to 32 MiB), after which segments
come from the heap, whose fragments it keeps: over a 1 GiB stream the worker's RSS grew by
~21 MiB (docs/performance.md). A fixed threshold keeps blocks of `LARGE_BLOCK_BYTES` or more in
their own mappings, returned on free; smaller ones (the 1 MiB download chunks) stay on the heap.
"""

from __future__ import annotations

import ctypes

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 4 * 1024 * 1024


def fix_mmap_threshold(limit: int = LARGE_BLOCK_BYTES) -> bool:
    """Set glibc's mmap threshold to `limit` for this process; False where there is no glibc `mallopt`."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit))
