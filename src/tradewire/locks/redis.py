"""Redis locks: ``SET name token NX PX ttl`` with a random owner token per hold.

Release is a Lua compare-and-delete, so a holder whose lock expired (it paused past ``ttl_s``)
never deletes the lock a second holder took in the meantime. Waiting is polling with a growing
backoff (5 ms doubling to 100 ms, with jitter) until ``wait_s``. Single Redis instance, no
fencing token: an optimisation against duplicate work, not a correctness mechanism
(architecture decision 5). ``redis`` is imported on construction; nothing connects before use.

``hold_free`` (a worker's batch takes the free locks of its events at once) is one script
call with every name (SET NX PX for each, the indexes taken returned) and one release script.

The SETs and releases that many holders issue in the same event-loop turn (a worker's whole
micro-batch takes and releases its events' locks together) go to Redis in one pipeline, at
most one pipeline in flight: one connection and one round trip instead of one per holder
(which also keeps a large batch from exhausting the client's connection pool). Each holder
still gets its own reply; a SET that succeeded for a holder cancelled meanwhile is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
# hold_free: one script call for a whole batch of names (KEYS), owner token ARGV[1]
_TAKE_FREE_LUA = """
local taken = {}
for i, key in ipairs(KEYS) do
    if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
        taken[#taken + 1] = i
    end
end
return taken
"""
_RELEASE_ALL_LUA = """
local released = 0
for _, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then
        released = released + redis.call('DEL', key)
    end
end
return released
"""
_FIRST_BACKOFF_S = 0.005
_MAX_BACKOFF_S = 0.1


class RedisLocks:
    """``Locks`` shared by every process that uses the same Redis."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(url)
        self._release = self._redis.register_script(_RELEASE_LUA)
        self._take_free = self._redis.register_script(_TAKE_FREE_LUA)
        self._release_all = self._redis.register_script(_RELEASE_ALL_LUA)
        self._queued: list[tuple[_Command, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.pipelines = 0  # round trips made (statistics, tests)

    @asynccontextmanager
    async def hold(
        self, name: str, *, ttl_s: float = 30.0, wait_s: float = 30.0
    ) -> AsyncIterator[None]:
        token = secrets.token_hex(16)
        await self._acquire(name, token, ttl_s, wait_s)
        try:
            yield
        finally:
            released = await self._call(_Command(name, token, 0))
            if not released:
                log(logger, logging.WARNING, "lock expired before release", lock=name, ttlS=ttl_s)

    @asynccontextmanager
    async def hold_free(
        self, names: Sequence[str], *, ttl_s: float = 30.0
    ) -> AsyncIterator[set[str]]:
        token = secrets.token_hex(16)  # one owner token for the whole set
        unique = list(dict.fromkeys(names))
        taken: list[str] = []
        if unique:
            ttl_ms = max(int(ttl_s * 1000), 1)
            indexes = await self._take_free(keys=unique, args=[token, ttl_ms])
            taken = [unique[int(i) - 1] for i in indexes]
        try:
            yield set(taken)
        finally:
            if taken:
                released = await self._release_all(keys=taken, args=[token])
                if int(released) != len(taken):
                    log(logger, logging.WARNING, "locks expired before release",
                        count=len(taken) - int(released), ttlS=ttl_s)

    async def _acquire(self, name: str, token: str, ttl_s: float, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        backoff = _FIRST_BACKOFF_S
        ttl_ms = max(int(ttl_s * 1000), 1)
        while not await self._call(_Command(name, token, ttl_ms)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeout(f"lock {name!r} not acquired within {wait_s:g}s")
            await asyncio.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _call(self, command: _Command) -> Any:
        """Queue one SET NX / release for the next pipeline and wait for its own reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((command, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        while self._queued:
            await asyncio.sleep(0)  # let the rest of this turn's holders queue theirs
            batch, self._queued = self._queued, []
            batch = [(c, f) for c, f in batch if not f.done()]  # cancelled before sending
            if not batch:
                continue
            try:
                replies = await self._pipeline([command for command, _ in batch])
                if len(replies) != len(batch):
                    raise RuntimeError(f"{len(replies)} replies to {len(batch)} lock calls")
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException as exc:  # cancelled (close): nobody waits forever
                for _, future in batch + self._queued:
                    if not future.done():
                        future.set_exception(RuntimeError(f"lock call interrupted: {exc!r}"))
                self._queued = []
                raise
            self._deliver(batch, replies)

    async def _pipeline(self, commands: list[_Command]) -> list[Any]:
        self.pipelines += 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                if command.ttl_ms:
                    pipe.set(command.name, command.token, nx=True, px=command.ttl_ms)
                else:
                    await self._release(keys=[command.name], args=[command.token], client=pipe)
            return list(await pipe.execute(raise_on_error=False))

    def _deliver(self, batch: list[tuple[_Command, asyncio.Future[Any]]], replies: list[Any]
                 ) -> None:
        for (command, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its holder is gone: do not leave a lock it took behind
                if command.ttl_ms and reply and not isinstance(reply, BaseException):
                    orphan: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    orphan.add_done_callback(lambda f: f.cancelled() or f.exception())
                    self._queued.append((_Command(command.name, command.token, 0), orphan))
            elif isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self._redis.aclose()


@dataclass(frozen=True)
class _Command:
    """``ttl_ms`` > 0: SET name token NX PX ttl_ms; 0: compare-and-delete release."""

    name: str
    token: str
    ttl_ms: int
