"""``RedisOwnership``: heartbeat membership + rendezvous assignment + renewable partition leases.

The names below are the bus's (``LeaseSpace()``, the default); the streams layer runs the same
machinery over its shards with ``LeaseSpace`` of the ``ws-streams:*`` names
(``tradewire.streams.shards_redis``).

Every ``renew_s`` (or at once when another member publishes on ``ws-events:members:changed``)
a member runs one *round*:

1. heartbeat: ``ZADD ws-events:members <redis now ms> <member>`` and drop members older than
   ``ttl_s`` (one script, Redis time: no clock skew between hosts);
2. desired partitions = those ``assignment`` (rendezvous hashing with bounded loads) gives
   this member over the live members;
3. renew every held lease with a compare-and-extend script (``PEXPIRE`` only if the value is
   still ``<member>:<epoch>``); a failed renewal drops the partition at once;
4. release held partitions that are no longer desired once no message of theirs is in flight
   here (``busy``), or after ``ttl_s`` at the latest; then publish a change notice;
5. acquire desired, unheld partitions: ``SET NX`` + ``INCR`` epoch in one script.

``owned()`` also drops a partition whose local deadline (send time of the last successful
renewal + 0.9 x ``ttl_s``) has passed, so a stalled event loop stops fetching before another
member can take the lease. A SIGKILLed member's partitions move after its lease and heartbeat
expire (<= ``ttl_s``) plus one round of the survivors (<= ``renew_s``): <= 8 s by default.
``redis`` is imported on construction; nothing connects before ``start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradewire import names
from tradewire.bus.lanes import cancel_all, error_text
from tradewire.bus.ownership import DEFAULT_RENEW_S, DEFAULT_TTL_S, Busy, assignment
from tradewire.bus.redis_pipe import PipeReplyError, RedisPipe
from tradewire.logging import log

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

logger = logging.getLogger("tradewire.bus.ownership")

_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
_ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
"""
# KEYS: the leases; ARGV: their tokens, then the TTL (ms). Returns 1/0 per lease (renewed or
# not ours any more): one command for every held lease instead of one per lease.
_RENEW_MANY_LUA = """
local ttl = ARGV[#KEYS + 1]
local renewed = {}
for i = 1, #KEYS do
    if redis.call('GET', KEYS[i]) == ARGV[i] then
        renewed[i] = redis.call('PEXPIRE', KEYS[i], ttl)
    else
        renewed[i] = 0
    end
end
return renewed
"""
_RENEW_MANY_SHA = hashlib.sha1(_RENEW_MANY_LUA.encode()).hexdigest()
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SAFETY = 0.9  # fraction of the TTL a lease is trusted locally after its renewal was sent
_WANTING_FACTOR = 4  # rounds run this many times faster while desired partitions are unheld


@dataclass(frozen=True)
class LeaseSpace:
    """The Redis names one family of leases uses (default: the bus's ``ws-events`` partitions)."""

    members_key: str = names.MEMBERS  # ZSET member -> last heartbeat (Redis ms)
    changed_channel: str = names.MEMBERS_CHANGED  # pub/sub: joined, left or released
    lease_name: Callable[[int], str] = names.lease_name  # value "<member>:<epoch>", PX ttl
    epoch_name: Callable[[int], str] = names.lease_epoch_name  # INCR at each acquisition


LeaseHook = Callable[[int, int], None]
"""``hook(partition, epoch)``, called synchronously from a round."""


@dataclass
class _Hold:
    epoch: int
    token: str  # "<member>:<epoch>", the lease value
    deadline: float  # loop time until which the lease is trusted
    leaving_since: float | None = None  # no longer desired since (loop time)


class RedisOwnership:
    """``Ownership`` shared by every consumer on the same Redis (see the module docstring)."""

    def __init__(
        self, url: str, member: str, partitions: int, *, ttl_s: float = DEFAULT_TTL_S,
        renew_s: float = DEFAULT_RENEW_S, space: LeaseSpace | None = None,
        on_acquired: LeaseHook | None = None, on_released: LeaseHook | None = None,
        on_lost: LeaseHook | None = None, on_releasing: LeaseHook | None = None,
    ) -> None:
        """``on_acquired``: a new lease (new epoch) is held. ``on_releasing``: a trusted lease
        is being given up voluntarily; called at the very moment it leaves the holdings, before
        the release's round trip, so that a caller can show it as handed over without a moment
        in which it looks lost; ``on_released`` or ``on_lost`` follows once the release is
        answered. ``on_released``: a lease was given up voluntarily (moved to another member,
        or ``stop``) while still ours and trusted: a clean handover. ``on_lost``: a renewal
        failed, or a released lease was no longer ours or no longer trusted locally (or its
        release failed). A lease whose local deadline passes between rounds (stalled loop,
        ``kill``) only leaves ``owned()``: no round runs to report it."""
        from redis.asyncio import Redis

        if renew_s >= ttl_s:
            raise ValueError("renew_s must be shorter than ttl_s")
        self.member, self.partitions = member, partitions
        self.ttl_s, self.renew_s = ttl_s, renew_s
        self.space = space or LeaseSpace()
        self._hooks = {"acquired": on_acquired, "released": on_released, "lost": on_lost,
                       "releasing": on_releasing}
        self._redis: Redis = Redis.from_url(url)
        self._heartbeat = self._redis.register_script(_HEARTBEAT_LUA)
        self._acquire = self._redis.register_script(_ACQUIRE_LUA)
        self._renew_many = self._redis.register_script(_RENEW_MANY_LUA)
        # renewals over a lean connection where possible (``_renew``)
        self._pipe = RedisPipe.for_client(self._redis) if RedisPipe.supported(self._redis) \
            else None
        self._release = self._redis.register_script(_RELEASE_LUA)
        self._held: dict[int, _Hold] = {}
        # ``owned()``'s answer and the loop time until which it holds (the earliest deadline
        # in it); dropped by every change of ``_held`` (``_changed``)
        self._owned_cache: tuple[frozenset[int], float] | None = None
        self._busy: Busy = lambda partition: False
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._dead = False
        self.members: list[str] = []  # live members as of the last round
        self.rounds = 0

    @property
    def redis(self) -> Redis:
        """The client the leases use (shared by helpers of the same member; closed by
        ``close``)."""
        return self._redis

    @property
    def _ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 1)

    def owned(self) -> frozenset[int]:
        """The partitions held, trusted and not being left. The same object until a lease
        changes (or one in it reaches its deadline): callers asked every tick (the streams
        manager) may skip their own work when it ``is`` the previous answer."""
        now = asyncio.get_running_loop().time()
        cached = self._owned_cache
        if cached is not None and now < cached[1]:
            return cached[0]
        live = [(p, hold.deadline) for p, hold in self._held.items()
                if hold.deadline > now and hold.leaving_since is None]
        owned = frozenset(p for p, _ in live)
        self._owned_cache = (owned, min((d for _, d in live), default=math.inf))
        return owned

    def _changed(self) -> None:
        self._owned_cache = None

    def holds(self, partition: int) -> bool:
        hold = self._held.get(partition)
        return hold is not None and hold.deadline > asyncio.get_running_loop().time()

    def epoch(self, partition: int) -> int | None:
        hold = self._held.get(partition)
        return hold.epoch if hold is not None else None

    async def start(self, busy: Busy | None = None) -> None:
        if self._task is not None:
            return
        self._busy = busy or (lambda partition: False)
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self.space.changed_channel)
        await self.round()
        await self._redis.publish(self.space.changed_channel, self.member)  # owners hand over
        self._task = asyncio.create_task(self._run(), name=f"ownership:{self.member}")

    async def stop(self) -> None:
        """Release every lease and leave the membership (graceful shutdown)."""
        if self._dead:
            return
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None
        try:
            await self._release_all(list(self._held))
            await self._redis.zrem(self.space.members_key, self.member)
            await self._redis.publish(self.space.changed_channel, self.member)
        except Exception as exc:
            log(logger, logging.WARNING, "releasing partitions failed", error=error_text(exc))
        finally:
            self._held.clear()
            self._changed()
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = None

    async def kill(self) -> None:
        """Stop heartbeats and renewals, release nothing (tests: a member that died or
        stalled); its leases lapse locally at their deadlines, in Redis at their TTL."""
        self._dead = True
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None

    async def close(self) -> None:
        await self.stop()
        if self._pipe is not None:
            await self._pipe.close()
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            wanting = len(self._held) < sum(
                1 for owner in assignment(self.partitions, self.members).values()
                if owner == self.member
            )
            await self._wait(self.renew_s / (_WANTING_FACTOR if wanting else 1))
            try:
                await self.round()
            except Exception as exc:  # deadlines lapse on their own: owned() self-fences
                log(logger, logging.WARNING, "partition lease round failed", error=error_text(exc))

    async def _wait(self, timeout_s: float) -> None:
        """Sleep ``timeout_s`` or until another member publishes a change."""
        if self._pubsub is None:
            await asyncio.sleep(timeout_s)
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while (left := until - loop.time()) > 0:
            try:
                message: Any = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=left
                )
            except Exception:
                await asyncio.sleep(left)
                return
            if message is not None and message.get("data") != self.member.encode():
                return

    async def live_members(self) -> list[str]:
        """Members whose heartbeat is younger than ``ttl_s`` now (Redis time), read without
        heartbeating: also after ``stop()`` (e.g. is anyone left to hand over to?)."""
        raw: Any = await self._heartbeat(keys=[self.space.members_key], args=["", self._ttl_ms])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]

    async def round(self) -> None:
        """One heartbeat + renew + release + acquire round (see the module docstring)."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        raw: Any = await self._heartbeat(
            keys=[self.space.members_key], args=[self.member, self._ttl_ms]
        )
        self.members = [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
        desired = {
            p for p, owner in assignment(self.partitions, self.members).items()
            if owner == self.member
        }
        await self._renew_held(sent)
        await self._hand_over(desired, sent)
        await self._acquire_wanted(desired - set(self._held), sent)
        self.rounds += 1

    async def _renew_held(self, sent: float) -> None:
        held = list(self._held.items())
        if not held:
            return
        # one script for all of them: a pipeline of 256 renewals was ~5 ms of client CPU in
        # one callback every renewal period, a stall of everything else on the event loop
        results = await self._renew([self.space.lease_name(p) for p, _ in held],
                                    [*(hold.token for _, hold in held), self._ttl_ms])
        self._changed()  # new deadlines (or a lease gone)
        for (p, hold), ok in zip(held, results, strict=True):
            if ok:
                hold.deadline = sent + self.ttl_s * _SAFETY
            else:
                del self._held[p]
                log(logger, logging.WARNING, "partition lease lost", partition=p,
                    epoch=hold.epoch, member=self.member)
                self._notify("lost", p, hold.epoch)

    async def _renew(self, keys: list[str], args: list[Any]) -> Any:
        """The renewal script over the lean pipe when there is one: hiredis packs its ~500
        arguments in C, where redis-py's Python packer took ~1 ms of CPU per round in one
        callback (256 shards of a streams pod, every ``renew_s``: a stall of the socket
        readers). ``EVAL`` when Redis does not know the script yet (it caches it then)."""
        if self._pipe is None:
            return await self._renew_many(keys=keys, args=args)
        try:
            [reply] = await self._pipe.call(("EVALSHA", _RENEW_MANY_SHA, len(keys), *keys, *args))
        except PipeReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            [reply] = await self._pipe.call(("EVAL", _RENEW_MANY_LUA, len(keys), *keys, *args))
        return reply

    async def _hand_over(self, desired: set[int], now: float) -> None:
        doomed: list[int] = []
        for p, hold in self._held.items():
            if p in desired:
                if hold.leaving_since is not None:
                    hold.leaving_since = None
                    self._changed()
                continue
            if hold.leaving_since is None:
                hold.leaving_since = now
                self._changed()
            if not self._busy(p) or now - hold.leaving_since >= self.ttl_s:
                doomed.append(p)
        if doomed:
            await self._release_all(doomed)
            await self._redis.publish(self.space.changed_channel, self.member)

    async def _release_all(self, partitions: list[int]) -> None:
        """Give up ``partitions``: each leaves the holdings and, if still trusted, is reported
        ``releasing`` in the same step (no await in between: nobody sees it neither owned nor
        being released); then one pipelined DEL-if-ours, and ``released`` (clean) or ``lost``."""
        holds = [(p, self._held.pop(p)) for p in partitions if p in self._held]
        if not holds:
            return
        self._changed()
        sent = asyncio.get_running_loop().time()
        for p, hold in holds:
            if hold.deadline > sent:
                self._notify("releasing", p, hold.epoch)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for p, hold in holds:
                    await self._release(keys=[self.space.lease_name(p)], args=[hold.token],
                                        client=pipe)
                results = await pipe.execute()
        except BaseException:
            for p, hold in holds:  # unknown outcome: not a clean handover
                self._notify("lost", p, hold.epoch)
            raise
        for (p, hold), ok in zip(holds, results, strict=True):
            clean = bool(ok) and hold.deadline > sent  # ours and trusted until the DEL
            self._notify("released" if clean else "lost", p, hold.epoch)

    async def _acquire_wanted(self, wanted: set[int], sent: float) -> None:
        if not wanted:
            return
        order = sorted(wanted)
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in order:
                await self._acquire(
                    keys=[self.space.lease_name(p), self.space.epoch_name(p)],
                    args=[self.member, self._ttl_ms], client=pipe,
                )
            results = await pipe.execute()
        for p, epoch in zip(order, results, strict=True):
            if epoch is not None:
                token = f"{self.member}:{int(epoch)}"
                self._held[p] = _Hold(int(epoch), token, sent + self.ttl_s * _SAFETY)
                self._changed()
                log(logger, logging.INFO, "partition lease acquired", partition=p,
                    epoch=int(epoch), member=self.member)
                self._notify("acquired", p, int(epoch))

    def _notify(self, kind: str, partition: int, epoch: int) -> None:
        hook = self._hooks[kind]
        if hook is None:
            return
        try:
            hook(partition, epoch)
        except Exception as exc:  # a hook never breaks a round
            log(logger, logging.ERROR, "lease hook failed", hook=kind, partition=partition,
                error=error_text(exc))
