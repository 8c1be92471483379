"""Redis locks: ``SET name token NX PX ttl`` with a random owner token per hold.

Release is a Lua compare-and-delete, so a holder whose lock expired (it paused past ``ttl_s``)
never deletes the lock a second holder took in the meantime. Waiting is polling with a growing
backoff (5 ms doubling to 100 ms, with jitter) until ``wait_s``. Single Redis instance, no
fencing token: an optimisation against duplicate work, not a correctness mechanism
(architecture decision 5). ``redis`` is imported on construction; nothing connects before use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from tradewire.locks.base import LockTimeout
from tradewire.logging import log

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_FIRST_BACKOFF_S = 0.005
_MAX_BACKOFF_S = 0.1


class RedisLocks:
    """``Locks`` shared by every process that uses the same Redis."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(url)
        self._release = self._redis.register_script(_RELEASE_LUA)

    @asynccontextmanager
    async def hold(
        self, name: str, *, ttl_s: float = 30.0, wait_s: float = 30.0
    ) -> AsyncIterator[None]:
        token = secrets.token_hex(16)
        await self._acquire(name, token, ttl_s, wait_s)
        try:
            yield
        finally:
            released = await self._release(keys=[name], args=[token])
            if not released:
                log(logger, logging.WARNING, "lock expired before release", lock=name, ttlS=ttl_s)

    async def _acquire(self, name: str, token: str, ttl_s: float, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        backoff = _FIRST_BACKOFF_S
        ttl_ms = max(int(ttl_s * 1000), 1)
        while not await self._redis.set(name, token, nx=True, px=ttl_ms):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeout(f"lock {name!r} not acquired within {wait_s:g}s")
            await asyncio.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def close(self) -> None:
        await self._redis.aclose()
