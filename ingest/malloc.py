"""glibc's allocator told to keep freed memory in the heap, for a worker process.

Per image, ingestion allocates and frees arrays of a fraction of a megabyte to a few megabytes
(the patch codes' Fourier planes: ``services.patches``). glibc serves a block above its mmap
threshold by ``mmap`` and unmaps it on free, and trims the top of the heap past its trim
threshold, so each image page-faults its scratch memory in again: measured, the Laplacians of
one UKBench photo took 1.7 ms that way and 0.8 ms with the thresholds raised (docs/benchmarks.md,
signal_cost). Raised, a freed block stays mapped for the next image; a worker process keeps up
to :data:`TRIM_THRESHOLD` of freed heap.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD: Final = -1  # glibc's malloc.h
M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD: Final = 32 * 2**20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD: Final = 128 * 2**20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process; False where the C library is
    not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and done
    if not done:
        log.warning("mallopt refused the thresholds: scratch memory is unmapped after each image")
    return done
