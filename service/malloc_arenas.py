"""Fewer glibc malloc arenas for the server process: a smaller peak RSS under load.

glibc gives each thread that allocates its own arena, up to 8 per core, and keeps freed memory
in them. The service's threads (DuckDB's, the store's worker, the event loop's executor) each
grew one: under 32 concurrent clients at 1M traces the server peaked at 613-626 MB in three
runs, and with two arenas at 578-613 MB in four, at the same throughput (`make bench-load`,
bench/FINDINGS.md §21). Set once at start, before any thread exists. ``MALLOC_ARENA_MAX`` in
the environment, which glibc reads itself, takes precedence; elsewhere than glibc this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True if this call set the cap."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    return bool(mallopt(_M_ARENA_MAX, arenas))
