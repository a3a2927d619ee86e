"""Python's cyclic garbage collector, tuned for a server whose answers are big object trees.

A 30-day hourly answer builds tens of thousands of short-lived objects (rows, points, models).
With the defaults each burst triggers collections, and every full collection walks the ~270K
objects that importing MLflow, SQLAlchemy and FastAPI left behind, which live as long as the
process: tools/discovery over 30 days of a million traces spent ~110 ms of its 600 in the
collector (bench/FINDINGS.md §17). Freezing the startup objects takes them out of every later
collection; a higher first threshold runs young collections less often. Reference counting
still frees every acyclic object at once, so memory is not held longer.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young collections; Python's default is 700.
YOUNG_THRESHOLD = 10_000

_frozen = False


def settle_after_startup() -> None:
    """Collect once, then move every surviving object to the permanent generation and raise
    the young threshold. Only the first call in a process freezes: a test session starts many
    apps, and freezing again would keep each one's cyclic garbage forever."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
