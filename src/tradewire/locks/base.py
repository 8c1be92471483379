"""Per-position locks keyed ``userId:symbol`` (see ``tradewire.names.lock_name``).

Locks avoid duplicate work between workers; correctness rests on idempotent processing
(unique event ids, conditional updates), never on the lock alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class LockTimeout(Exception):
    """The lock could not be acquired within the wait time."""


class Locks(Protocol):
    def hold(
        self, name: str, *, ttl_s: float = 30.0, wait_s: float = 30.0
    ) -> AbstractAsyncContextManager[None]:
        """Hold the named lock for the block. Raises ``LockTimeout`` after ``wait_s``."""
        ...

    def hold_free(
        self, names: Sequence[str], *, ttl_s: float = 30.0
    ) -> AbstractAsyncContextManager[set[str]]:
        """Take, without waiting, each of ``names`` that is free, and hold those for the block;
        yields the names taken (a batch of events takes its locks in one call: the busy ones
        go the waiting way, ``hold``)."""
        ...

    async def close(self) -> None: ...
