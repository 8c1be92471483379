"""``RedisShards``: the streams pods' shard ownership over Redis (decision 6).

The bus's partition-lease machinery (``RedisOwnership``) over the ``ws-streams:*`` names:

* pods heartbeat in ``ws-streams:members`` (ZSET, Redis time); each shard's desired owner is
  the rendezvous hash over live pods; the owner holds ``ws-streams:lease:<shard>`` =
  ``<member>:<epoch>`` (PX ``ttl_s``), renewed every ``renew_s`` by compare-and-extend, all
  shards of a round in one pipeline; ``epoch`` = ``INCR ws-streams:lease:<shard>:epoch`` at
  each new acquisition;
* ``owned()``: shards held under a trusted lease (local deadline = send time of the last
  successful renewal + 0.9 x ``ttl_s``: a stalled loop fences itself before the lease expires);
* a shard that rendezvous moves to another pod (one joined) is released at once and enters
  ``draining()`` until now + ``handoff_timeout_s`` (+ ``expect_keying``'s seconds while
  another pod is live: the time a new owner may need for the listenKey POSTs of this pod's
  accounts within the IP weight; with nobody to take over, no longer than the timeout);
  ``stop()`` releases every lease, leaves the membership, publishes the change and puts
  every released shard into ``draining()``. A
  released shard enters ``draining()`` at the very moment it leaves ``owned()`` (the
  ownership's ``on_releasing`` hook, before the release's round trip), so the manager never
  sees a handed-over shard as lost, not even for that round trip;
* a shard whose renewal failed, whose release found the lease gone or no longer trusted (or
  failed), or whose local deadline passed is *lost*: it leaves ``owned()`` and is not (any
  more) in ``draining()`` (its sockets close at once). A lease deleted in Redis (e.g. a
  failover that lost the key) is lost and, when this pod is still its rendezvous owner,
  re-acquired in the same round under a new epoch (``epoch(shard)`` changes; ``lost`` counts it);
* ``mark_ready(shard)`` sets ``ws-streams:ready:<shard>`` = ``<member>:<epoch>`` only while
  this pod's lease on the shard is current (one script); ``ready_elsewhere(shard)`` is True
  once that key names another pod with an epoch above the one this pod held. A small poll task
  reads the ready keys of the draining shards (one ``MGET`` every ``ready_poll_s``) while any
  of them is neither ready nor past its deadline, also after ``stop()``; ``close()`` ends it.
  After ``stop()`` it also reads the live pods: with none left (all stopping at once), the
  drains end at once.

``redis`` is imported on construction; nothing connects before ``start``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradewire import names
from tradewire.bus.lanes import cancel_all, error_text
from tradewire.bus.ownership_redis import LeaseSpace, RedisOwnership
from tradewire.logging import log
from tradewire.streams.shards import DEFAULT_SHARDS

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("tradewire.streams.shards")

SHARD_LEASES = LeaseSpace(
    members_key=names.STREAM_MEMBERS,
    changed_channel=names.STREAM_MEMBERS_CHANGED,
    lease_name=names.shard_lease_name,
    epoch_name=names.shard_lease_epoch_name,
)
"""The ``ws-streams:*`` names of the shard leases."""

DEFAULT_READY_POLL_S = 0.25

_MARK_READY_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


@dataclass
class _Drain:
    epoch: int  # the epoch this pod held when it released the shard
    deadline: float  # loop time until which the shard's sockets may stay open


class RedisShards:
    """``Shards`` coordinated over Redis (see the module docstring)."""

    def __init__(
        self, url: str, member: str, shards: int = DEFAULT_SHARDS, *, ttl_s: float = 6.0,
        renew_s: float = 2.0, handoff_timeout_s: float = 15.0,
        ready_poll_s: float = DEFAULT_READY_POLL_S,
    ) -> None:
        self.member, self.shards = member, shards
        self.handoff_timeout_s, self.ready_poll_s = handoff_timeout_s, ready_poll_s
        self.keying_s = 0.0  # ``expect_keying``: added to the drain while another pod is live
        self.ownership = RedisOwnership(
            url, member, shards, ttl_s=ttl_s, renew_s=renew_s, space=SHARD_LEASES,
            on_acquired=self._on_acquired, on_released=self._on_released, on_lost=self._on_lost,
            on_releasing=self._on_releasing,
        )
        self._mark = self._redis.register_script(_MARK_READY_LUA)
        self._draining: dict[int, _Drain] = {}
        self._ready: set[int] = set()  # draining shards another pod marked ready
        self._poller: asyncio.Task[None] | None = None
        self._stopped = self._closed = False
        self.acquired = self.released = self.lost = 0  # lease events so far (metrics)

    @property
    def _redis(self) -> Redis:
        return self.ownership.redis

    @property
    def ttl_s(self) -> float:
        return self.ownership.ttl_s

    @property
    def renew_s(self) -> float:
        return self.ownership.renew_s

    @property
    def members(self) -> list[str]:
        """Live pods as of the last round."""
        return self.ownership.members

    @property
    def rounds(self) -> int:
        return self.ownership.rounds

    # --- the Shards protocol ---

    def owned(self) -> frozenset[int]:
        return self.ownership.owned()

    def epoch(self, shard: int) -> int | None:
        """Fencing token of this pod's current hold of ``shard`` (None when not held)."""
        return self.ownership.epoch(shard)

    def draining(self) -> dict[int, float]:
        self._prune(asyncio.get_running_loop().time())
        return {shard: drain.deadline for shard, drain in self._draining.items()}

    def ready_elsewhere(self, shard: int) -> bool:
        return shard in self._ready and shard in self._draining

    def expect_keying(self, seconds: float) -> None:
        self.keying_s = max(0.0, seconds)

    def drain_s(self) -> float:
        """How long a shard released now may keep its sockets: ``handoff_timeout_s``, plus
        ``keying_s`` when another pod was live at the last round (a successor can exist)."""
        others = any(member != self.member for member in self.ownership.members)
        return self.handoff_timeout_s + (self.keying_s if others else 0.0)

    async def mark_ready(self, shard: int) -> None:
        epoch = self.ownership.epoch(shard)
        if epoch is None or not self.ownership.holds(shard):
            return  # not ours (any more): the current owner marks it
        token = f"{self.member}:{epoch}"
        done = await self._mark(
            keys=[names.shard_lease_name(shard), names.shard_ready_name(shard)], args=[token]
        )
        if not done:
            log(logger, logging.INFO, "shard not marked ready: lease no longer ours",
                shard=shard, epoch=epoch, member=self.member)

    async def start(self) -> None:
        await self.ownership.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.ownership.stop()  # the hooks put the released shards into draining

    async def kill(self) -> None:
        """Stop heartbeats and renewals and release nothing (tests: a pod that died or
        stalled); its shards leave ``owned()`` at their local deadlines, and move to the other
        pods once the leases and the heartbeat expire in Redis."""
        self._stopped = True
        await self.ownership.kill()
        await self._stop_poller()

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop()
        self._closed = True
        await self._stop_poller()
        await self.ownership.close()

    # --- lease events (called synchronously from the ownership's rounds) ---

    def _on_acquired(self, shard: int, epoch: int) -> None:
        self.acquired += 1
        self._draining.pop(shard, None)
        self._ready.discard(shard)

    def _on_releasing(self, shard: int, epoch: int) -> None:
        """The shard leaves ``owned()`` now, voluntarily: it is in ``draining()`` from this
        same moment (never seen lost in between); ``_on_lost`` takes it out again if the
        release turns out not to be clean."""
        deadline = asyncio.get_running_loop().time() + self.drain_s()
        self._draining[shard] = _Drain(epoch, deadline)
        self._ready.discard(shard)

    def _on_released(self, shard: int, epoch: int) -> None:
        self.released += 1
        drain = self._draining.get(shard)
        if drain is None or drain.epoch != epoch:  # no ``releasing`` before: drain from now
            deadline = asyncio.get_running_loop().time() + self.drain_s()
            self._draining[shard] = _Drain(epoch, deadline)
            self._ready.discard(shard)
        log(logger, logging.INFO, "shard handed over", shard=shard, epoch=epoch,
            member=self.member, drain_s=round(self.drain_s(), 1))
        if not self._closed and (self._poller is None or self._poller.done()):
            self._poller = asyncio.create_task(self._poll(), name=f"shards-ready:{self.member}")

    def _on_lost(self, shard: int, epoch: int) -> None:
        self.lost += 1
        self._draining.pop(shard, None)
        self._ready.discard(shard)

    # --- ready polling ---

    def _prune(self, now: float) -> None:
        for shard in [s for s, drain in self._draining.items() if drain.deadline <= now]:
            del self._draining[shard]
            self._ready.discard(shard)

    def _waiting(self) -> list[tuple[int, int]]:
        """Draining shards not yet seen ready elsewhere: (shard, epoch held here)."""
        self._prune(asyncio.get_running_loop().time())
        return sorted(
            (shard, drain.epoch) for shard, drain in self._draining.items()
            if shard not in self._ready
        )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.ready_poll_s)
            waiting = self._waiting()
            if not waiting:
                return
            try:
                values: list[Any] = await self._redis.mget(
                    [names.shard_ready_name(shard) for shard, _ in waiting]
                )
            except Exception as exc:  # the drain deadline still bounds the handover
                log(logger, logging.WARNING, "reading shard ready keys failed",
                    error=error_text(exc))
                continue
            for (shard, epoch), value in zip(waiting, values, strict=True):
                drain = self._draining.get(shard)
                if drain is not None and drain.epoch == epoch and self._successor(value, epoch):
                    self._ready.add(shard)
            if self._stopped and not await self._anyone_else():
                return

    async def _anyone_else(self) -> bool:
        """After ``stop()``: is another pod still live to take the shards over? When none is
        (every pod stopping at once, the last one leaving), the drains end now instead of
        waiting out ``drain_s()`` for a successor that cannot come."""
        try:
            live = await self.ownership.live_members()
        except Exception as exc:
            log(logger, logging.WARNING, "reading live pods failed", error=error_text(exc))
            return True  # unknown: the drain deadline still bounds the handover
        if any(member != self.member for member in live):
            return True
        log(logger, logging.INFO, "no other streams pod is live: handed-over shards close now",
            member=self.member, shards=len(self._draining))
        self._draining.clear()
        self._ready.clear()
        return False

    def _successor(self, value: Any, held_epoch: int) -> bool:
        """``value`` (``<member>:<epoch>``) names another pod with a later epoch."""
        if value is None:
            return False
        text = value.decode() if isinstance(value, bytes) else str(value)
        member, _, epoch = text.rpartition(":")
        try:
            return member != self.member and int(epoch) > held_epoch
        except ValueError:
            return False

    async def _stop_poller(self) -> None:
        if self._poller is not None:
            await cancel_all([self._poller])
            self._poller = None
