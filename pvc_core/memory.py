"""How the daemon's process asks glibc's allocator to give large answers back.

A full list of 10,000 VMs is one ~18 MB bytes object per request. glibc serves
a block that large with mmap, but after freeing one it raises its mmap
threshold to that size (up to 32 MiB), so the next ones come from the heap
arenas, one per serving thread, and stay mapped: RSS grew from 358 to
720-770 MiB over repeated lists. A fixed threshold keeps every large block an
mmap that is returned to the system when freed; fewer arenas bound the
small-block fragmentation of many threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("pvc.memory")

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
ARENA_MAX = 4


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold and arena count; False (and nothing changed) off glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    log.debug("glibc mmap threshold %d bytes, at most %d arenas: %s", MMAP_THRESHOLD, ARENA_MAX, ok)
    return ok
