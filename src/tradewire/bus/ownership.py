"""Partition ownership: which bus partitions this consumer may fetch (architecture decision 3).

* ``LocalOwnership`` owns every partition. For the memory bus and for the embedded SQLite bus
  used by ONE process (the one-machine deployment): one consumer per process owns everything.
  Several processes on one SQLite file are not fenced from each other (not supported for
  per-key order across processes; run one worker process).
* ``RedisOwnership`` (distributed deployment, ``bus.ownership_redis``): members heartbeat in
  a ZSET scored by Redis time; each partition's desired owner comes from rendezvous (highest
  random weight) hashing over live members with bounded loads (``assignment``: every member
  gets ``P // N`` or one more); the owner holds ``ws-events:lease:<p>`` = ``<member>:<epoch>``
  (PX ttl) and renews it every ``renew_s`` with a compare-and-extend script. ``epoch`` is
  ``INCR ws-events:lease:<p>:epoch`` at each new acquisition: the fencing token. A partition whose
  renewal fails, or whose local lease deadline passed (stalled loop), is dropped at once.

The consumer asks ``owned()`` before every fetch, so losing a partition stops fetching it at
once, and ``holds()`` before starting each message, so its queued messages stay pending for the
new owner; the message running at that moment finishes (the database epoch/uniqueness checks
are the guarantee, decision 5). A partition that merely moves to another member (one joined)
is released once this consumer holds none of its messages any more, or after ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from tradewire.bus.base import Bus, Message
from tradewire.config import Settings
from tradewire.errors import ConfigError

if TYPE_CHECKING:
    from tradewire.bus.ownership_redis import RedisOwnership

logger = logging.getLogger(__name__)

Busy = Callable[[int], bool]
"""``busy(p)``: this consumer still holds in-flight messages of partition ``p``."""

DEFAULT_TTL_S = 6.0
DEFAULT_RENEW_S = 2.0


class Ownership(Protocol):
    """What ``Consumer`` needs: the partitions it may fetch, and start/stop of the member."""

    member: str

    def owned(self) -> Collection[int] | None:
        """Partitions this member may fetch right now; ``None`` = all of them."""
        ...

    def holds(self, partition: int) -> bool:
        """This member may still start messages of ``partition`` (its lease is trusted)."""
        ...

    def epoch(self, partition: int) -> int | None:
        """Fencing token of the current hold of ``partition`` (None when not held)."""
        ...

    async def start(self, busy: Busy | None = None) -> None:
        """Join (register, first acquisition round) and keep the leases renewed."""
        ...

    async def stop(self) -> None:
        """Release every lease and leave: the survivors take the partitions at once."""
        ...

    async def close(self) -> None:
        """``stop`` and close the connection (process shutdown)."""
        ...


class LocalOwnership:
    """Owns every partition (one consumer per process; memory / single-process SQLite bus)."""

    def __init__(self, member: str = "local") -> None:
        self.member = member

    def owned(self) -> Collection[int] | None:
        return None

    def holds(self, partition: int) -> bool:
        return True

    def epoch(self, partition: int) -> int | None:
        return 0

    async def start(self, busy: Busy | None = None) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def fetch_owned(
    bus: Bus, ownership: Ownership, consumer: str, count: int, block_ms: int,
    stop: asyncio.Event,
) -> list[Message]:
    """``bus.fetch`` restricted to the partitions ``ownership`` owns right now. An empty set is
    passed on too (the backend waits ``block_ms`` and forgets what it read: a partition owned
    again later is read from its pending history first)."""
    owned = ownership.owned()
    if owned is None:
        return await bus.fetch(consumer, count, block_ms)
    if not owned and stop.is_set():
        return []
    return await bus.fetch(consumer, count, block_ms, partitions=owned)


def _weight(member: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assignment(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Desired owner of every partition: rendezvous hashing with bounded loads.

    Plain rendezvous hashing leaves few partitions badly spread over few members (16 over two
    workers: 11 and 5 for the bench's names, so one worker carried 69 % of the events; over
    eight, some members got none). Here the (member, partition) pairs are taken in order of
    their hash weight, highest first, and a pair is kept while its partition is unassigned and
    its member below its quota: ``P // N`` each, one more for the first ``P % N`` members to
    reach it. Every member computes the same answer from the same live set; a member joining
    or leaving moves a little more than its share (16 partitions, two to three members: 5.6
    moved on average against 5.3 for the share; docs/benchmarks.md)."""
    return dict(_balanced(partitions, tuple(sorted(set(members)))))


@lru_cache(maxsize=64)  # recomputed only when the live set changes (a round runs every ~2 s)
def _balanced(partitions: int, live: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    if not live:
        return ()
    quota, extra = divmod(partitions, len(live))
    pairs = sorted(
        ((_weight(member, p), member, p) for member in live for p in range(partitions)),
        reverse=True,
    )
    load = dict.fromkeys(live, 0)
    owner: dict[int, str] = {}
    for _, member, partition in pairs:
        if partition in owner:
            continue
        if load[member] < quota or (load[member] == quota and extra > 0):
            if load[member] == quota:
                extra -= 1
            owner[partition] = member
            load[member] += 1
    return tuple(sorted(owner.items()))


def ownership_url(settings: Settings) -> str | None:
    """The Redis URL that coordinates ownership: the bus itself when it is Redis Streams, else
    ``lock_url`` when it is Redis (RabbitMQ deployments); None: local ownership."""
    for url in (settings.bus_url.strip(), settings.lock_url.strip()):
        if url.startswith(("redis://", "rediss://", "unix://")):
            return url
    return None


def create_ownership(settings: Settings, name: str | None = None) -> Ownership:
    """Ownership for a worker named ``name`` (default ``settings.worker_name``).

    * bus ``redis://`` -> ``RedisOwnership`` on the bus's Redis;
    * bus ``amqp://`` with ``lock_url`` ``redis://`` -> ``RedisOwnership`` on the lock Redis;
    * bus ``amqp://`` without a Redis lock URL -> ``ConfigError`` (partition ownership needs
      a coordinator; RabbitMQ alone would load-balance keys over consumers);
    * ``embedded`` / ``sqlite:///`` / ``memory`` -> ``LocalOwnership`` (one worker process).
    """
    member = name or settings.worker_name
    url = ownership_url(settings)
    if url is None:
        if settings.bus_url.strip().startswith(("amqp://", "amqps://")):
            raise ConfigError(
                "per-partition ownership on RabbitMQ needs TRADEWIRE_LOCK_URL=redis://..."
            )
        return LocalOwnership(member)
    return _redis_ownership(url, settings, member)


def _redis_ownership(url: str, settings: Settings, member: str) -> RedisOwnership:
    from tradewire.bus.ownership_redis import RedisOwnership

    return RedisOwnership(
        url, member, settings.bus_partitions, ttl_s=settings.partition_lease_ttl_s,
        renew_s=settings.partition_lease_renew_s,
    )
