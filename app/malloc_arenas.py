"""Cap glibc's malloc arenas in the server process: the memory a busy multi-threaded kb serve keeps.

glibc gives each thread that meets a locked arena a new one, up to 8 per core, and returns an arena's freed
memory to the system only from its top. A query's short-lived numpy arrays (BM25 scores over a million
chunks: ~10 MB) are freed in whichever of 16 arenas the request's thread used, and the holes stay: 20
concurrent clients took the server from 2.4 to 2.9 GB resident and a 3.1 GB high-water mark at 1M chunks,
where 2 arenas held it at 2.5/2.7 GB with the same latency (2026-12-03, docs/benchmarks.md). This is
``MALLOC_ARENA_MAX=2`` applied from inside, so that ``kb serve`` gets it however it is started; an operator's
own ``MALLOC_ARENA_MAX`` wins. It must run early: glibc fixes its arena limit when the ninth arena is made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # malloc.h


def limit_malloc_arenas(arenas: int) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas (0: leave glibc's default); True when applied. A no-op
    where it cannot apply: another libc (musl, macOS), or ``MALLOC_ARENA_MAX`` set by the operator."""
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # mallopt with glibc's option numbers only
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(_M_ARENA_MAX, arenas))
    log.debug("malloc arenas capped at %d: %s", arenas, applied)
    return applied
