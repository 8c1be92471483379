"""Which accounts this ``streams`` pod watches: virtual shards held under leases (decision 6).

Every account maps to one of ``stream_shards`` virtual shards (default 256) by a stable hash of
its id. A pod streams the accounts of the shards it *owns*:

* ``LocalShards`` owns every shard (embedded defaults: one pod, nothing to coordinate).
* ``RedisShards`` (``tradewire.streams.shards_redis``): pods heartbeat, shards are assigned by
  rendezvous hashing over live pods, each shard is a renewable Redis lease with an epoch.

The manager polls ``owned()`` often (sub-second): a shard that leaves ``owned()`` without being
in ``draining()`` was *lost* (renewal failed or its lease deadline passed) and its sockets close
at once; a shard in ``draining()`` was *handed over* (another pod joined, or this one is
stopping) and its sockets stay open until ``ready_elsewhere(shard)`` or the drain deadline, so
a rolling deploy has no gap. The new owner calls ``mark_ready(shard)`` once every account of
the shard is streaming again (overlapping duplicates are harmless: stable event ids).

``create_shards(settings)`` picks the implementation: ``RedisShards`` when the deployment has a
Redis coordinator (the bus's Redis, else ``lock_url``; see ``bus.ownership.ownership_url``),
else ``LocalShards``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tradewire.config import Settings

DEFAULT_SHARDS = 256


def shard_of(account_id: int, shards: int = DEFAULT_SHARDS) -> int:
    """The virtual shard of an account: stable across processes, versions and hosts."""
    digest = hashlib.blake2b(str(account_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class Shards(Protocol):
    """What the streams manager needs from shard ownership."""

    member: str
    shards: int

    def owned(self) -> Collection[int] | None:
        """Shards whose accounts this pod must stream now; ``None`` = every shard."""
        ...

    def draining(self) -> dict[int, float]:
        """Shards handed over by this pod (not lost) -> loop time until which their sockets
        may stay open while the new owner connects."""
        ...

    def ready_elsewhere(self, shard: int) -> bool:
        """Another pod has marked ``shard`` ready (its accounts stream there)."""
        ...

    def expect_keying(self, seconds: float) -> None:
        """How long a new owner may need to give listenKeys to the accounts of the shards this
        pod hands over (the manager's estimate, from its account count and the IP weight):
        a handed-over shard drains ``handoff_timeout_s`` + this while another pod is live."""
        ...

    def epoch(self, shard: int) -> int | None:
        """Fencing token of this pod's current hold of ``shard`` (None: not held). A shard lost
        and taken again between two polls stays in ``owned()`` under a new epoch: the manager
        marks it ready again."""
        ...

    async def mark_ready(self, shard: int) -> None:
        """Every account of ``shard`` streams on this pod (handover can finish)."""
        ...

    async def start(self) -> None:
        """Join and take the first shards; keep the leases renewed in the background."""
        ...

    async def stop(self) -> None:
        """Graceful leave: release every lease at once (their shards move to ``draining``)."""
        ...

    async def close(self) -> None:
        """Release what is still held and close connections."""
        ...


class LocalShards:
    """One pod owns every shard (embedded defaults)."""

    def __init__(self, member: str = "local", shards: int = DEFAULT_SHARDS) -> None:
        self.member = member
        self.shards = shards

    def owned(self) -> Collection[int] | None:
        return None

    def draining(self) -> dict[int, float]:
        return {}

    def ready_elsewhere(self, shard: int) -> bool:
        return False

    def expect_keying(self, seconds: float) -> None:
        return None

    def epoch(self, shard: int) -> int | None:
        return 0

    async def mark_ready(self, shard: int) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


def create_shards(settings: Settings, member: str | None = None) -> Shards:
    """Shard ownership of the pod ``member`` (default ``settings.stream_name``): ``RedisShards``
    on the coordinating Redis (bus ``redis://``, else ``lock_url`` ``redis://``) with
    ``stream_shards``, ``shard_lease_ttl_s``, ``shard_lease_renew_s`` and
    ``handoff_timeout_s``; ``LocalShards`` (owns every shard) without one."""
    from tradewire.bus.ownership import ownership_url
    from tradewire.errors import ConfigError

    name = member or settings.stream_name
    url = ownership_url(settings)
    if url is None:
        return LocalShards(name, settings.stream_shards)
    if settings.shard_lease_renew_s >= settings.shard_lease_ttl_s:
        raise ConfigError("TRADEWIRE_SHARD_LEASE_RENEW_S must be shorter than SHARD_LEASE_TTL_S")
    from tradewire.streams.shards_redis import RedisShards

    return RedisShards(
        url, name, settings.stream_shards, ttl_s=settings.shard_lease_ttl_s,
        renew_s=settings.shard_lease_renew_s, handoff_timeout_s=settings.handoff_timeout_s,
    )
