"""Per-position locks keyed ``userId:symbol`` (see ``tradewire.names.lock_name``).

Locks avoid duplicate work between workers; correctness rests on idempotent processing
(unique event ids, conditional updates), never on the lock alone.
"""

from __future__ import annotations

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

    async def close(self) -> None: ...
