"""Garbage-collector settings for long-running serving processes (the ``worker`` and
``streams`` commands call ``settle()`` once their roles are built).

A worker process holds ~130,000 container objects after its imports (SQLAlchemy, pydantic,
FastAPI metadata, ...) that live as long as the process. CPython's cyclic collector walks all
of them in every full collection, and the per-event objects (coroutines, futures, dicts) made
under a backlog trigger one about every second: in ``make bench-bus`` about a third of a worker's
CPU went to the collector (``gc.callbacks`` timing, CPU clock). ``settle()`` moves everything
alive when serving starts into the permanent generation (``gc.freeze``: never scanned, never
freed — it is the process's startup state) and raises the young-generation threshold, so
collections stay few and only ever walk the objects made since.

Reference counting still frees every acyclic object at once; only cycles wait for a collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations (net) between young collections; CPython's default: 700

_settled = False


def settle(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Freeze the startup heap out of the collector and collect young objects less often.
    Idempotent per process (a second call does nothing: objects made while serving are not
    frozen)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young_threshold, young), middle, old)


def freeze() -> None:
    """Move every object alive now into the permanent generation, e.g. once a long-lived
    population (thousands of accounts' clients, sockets and tasks) has been built after
    ``settle()``: full collections no longer walk it. Cycles among frozen objects are never
    collected; reference counting still frees the rest."""
    gc.freeze()
