"""Partition ownership: which bus partitions this consumer may fetch (architecture decision 3).

* ``LocalOwnership`` owns every partition. For the memory bus and for the embedded SQLite bus
  used by ONE process (the one-machine deployment): one consumer per process owns everything.
  Several processes on one SQLite file are not fenced from each other (not supported for
  per-key order across processes; run one worker process).
* ``RedisOwnership`` (distributed deployment, ``bus.ownership_redis``): members heartbeat in
  a ZSET scored by Redis time; each partition's desired owner is the rendezvous (highest random
  weight) hash over live members; the owner holds ``ws-events:lease:<p>`` = ``<member>:<epoch>``
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


def rendezvous_owner(partition: int, members: Iterable[str]) -> str | None:
    """The member with the highest hash weight for ``partition`` (None without members).
    Adding or removing a member moves only the partitions it wins or held."""

    def weight(member: str) -> tuple[int, str]:
        digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big"), member

    return max(members, key=weight, default=None)


def assignment(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Desired owner of every partition (rendezvous hashing)."""
    live = sorted(set(members))
    return {p: owner for p in range(partitions) if (owner := rendezvous_owner(p, live))}


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
