"""Garbage collection tuned for a long-running service."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)


def tune_gc() -> None:
    """Fewer, cheaper collections: every event handled allocates short-lived objects,
    and the default young-generation threshold (700) ran a collection every few events,
    each older one walking every object the imports and the app built. Those are frozen
    (never collected: they live as long as the process), and young collections are rarer.
    Call it once the service is built, before it runs."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
