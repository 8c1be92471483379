"""In-process locks for the one-machine deployment: one ``asyncio.Lock`` per name.

An entry exists only while some task holds or waits for its lock, so the table does not grow
with the number of distinct ``userId:symbol`` names ever used. ``ttl_s`` is accepted for
protocol compatibility and ignored: an in-process holder cannot die without releasing (the
context manager releases on any exit, cancellation included).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tradewire.locks.base import LockTimeout


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters


class MemoryLocks:
    """``Locks`` for one process; share one instance between every role of the process."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Names currently held or waited for."""
        return len(self._entries)

    @asynccontextmanager
    async def hold(
        self, name: str, *, ttl_s: float = 30.0, wait_s: float = 30.0
    ) -> AsyncIterator[None]:
        entry = self._entries.setdefault(name, _Entry())
        entry.users += 1
        try:
            if entry.users == 1:  # nobody else holds or waits: acquiring cannot block
                await entry.lock.acquire()
            else:
                await self._acquire(entry.lock, name, wait_s)
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[name]

    @asynccontextmanager
    async def hold_free(
        self, names: Sequence[str], *, ttl_s: float = 30.0
    ) -> AsyncIterator[set[str]]:
        taken: set[str] = set()
        for name in names:
            if name not in self._entries:  # nobody holds or waits: taking it cannot block
                entry = self._entries[name] = _Entry(users=1)
                await entry.lock.acquire()
                taken.add(name)
        try:
            yield taken
        finally:
            for name in taken:
                entry = self._entries[name]
                entry.lock.release()
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[name]

    @staticmethod
    async def _acquire(lock: asyncio.Lock, name: str, wait_s: float) -> None:
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await lock.acquire()
        except TimeoutError:
            raise LockTimeout(f"lock {name!r} not acquired within {wait_s:g}s") from None

    async def close(self) -> None:
        return None
