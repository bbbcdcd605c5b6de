"""Keep the C heap's freed memory for the next batch instead of handing it back to the kernel.

glibc's malloc serves a block over its mmap threshold (128 KiB at first, raised as such blocks are
freed) with fresh pages, and returns free memory at the top of the heap once it exceeds its trim
threshold. Purification allocates and frees the same activations batch after batch, and a fresh
process (a Ray actor) kept giving them back and faulting them in again: the kernel zeroed pages it
had just taken back, and the actor purified 1.3x slower than the same loop in a long-lived process
(BENCHMARKS.md, "A fresh process faults its heap back in"). Fixed thresholds stop the cycle:
blocks up to 32 MiB (glibc's largest allowed threshold) come from the heap, and up to `TRIM_BYTES`
of free heap is kept for reuse. Blocks above 32 MiB still come from the kernel; their faults are
small next to the work done on them.
DISILLUSION_KEEP_FREED_MEMORY=0 leaves glibc's defaults (Ray workers inherit it from the driver).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_BYTES = 256 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Set the thresholds, once per process; False where the C library is not glibc or the switch is
    off (nothing changes)."""
    if os.environ.get("DISILLUSION_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; an explicit threshold also turns off glibc's dynamic adjustment.
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    if not applied:
        log.debug("mallopt refused the heap thresholds; freed memory goes back to the kernel as usual")
    return applied
