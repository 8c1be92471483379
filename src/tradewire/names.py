"""Every queue, stream, group, key and lock name in one place."""

from __future__ import annotations

EVENTS = "ws-events"
"""The event queue of the owner's design; partition ``p`` is ``ws-events.<p>``."""

DLQ = "ws-events.dlq"
"""Dead-letter queue: messages that failed their last attempt. Never consumed automatically."""

PAUSED = f"{EVENTS}:paused"
"""Flag (Redis key) that pauses every consumer of the bus (``tradewire bus pause``)."""

MEMBERS = f"{EVENTS}:members"
"""ZSET of live consumers (member -> last heartbeat, Redis ms) for partition ownership."""

MEMBERS_CHANGED = f"{EVENTS}:members:changed"
"""Pub/sub channel: a member joined, left or released partitions (wake the others up)."""

WORKER_GROUP = "workers"
"""Consumer group of the event processors."""

DEFAULT_PARTITIONS = 16


def partition_name(partition: int) -> str:
    return f"{EVENTS}.{partition}"


def lock_name(user_id: int, symbol: str) -> str:
    """Lock key of the owner's design: ``userId:symbol``."""
    return f"tradewire:lock:{user_id}:{symbol}"


def lease_name(partition: int) -> str:
    """Lease of a partition's owner: value ``<member>:<epoch>``, with a TTL."""
    return f"{EVENTS}:lease:{partition}"


def lease_epoch_name(partition: int) -> str:
    """Counter incremented at each new acquisition of a partition lease (fencing token)."""
    return f"{EVENTS}:lease:{partition}:epoch"


def partition_consumer(partition: int) -> str:
    """Consumer name of a partition's owner inside the group (``p<partition>``)."""
    return f"p{partition}"


STREAMS = "ws-streams"
"""Namespace of the streams layer's coordination keys (shard leases, pod membership)."""

STREAM_MEMBERS = f"{STREAMS}:members"
"""ZSET of live ``streams`` pods (member -> last heartbeat, Redis ms) for shard ownership."""

STREAM_MEMBERS_CHANGED = f"{STREAMS}:members:changed"
"""Pub/sub channel: a streams pod joined, left or released shards."""


def shard_lease_name(shard: int) -> str:
    """Lease of a virtual shard's owner pod: value ``<member>:<epoch>``, with a TTL."""
    return f"{STREAMS}:lease:{shard}"


def shard_lease_epoch_name(shard: int) -> str:
    """Counter incremented at each new acquisition of a shard lease (fencing token)."""
    return f"{STREAMS}:lease:{shard}:epoch"


def shard_ready_name(shard: int) -> str:
    """Set by a shard's owner once every account of the shard streams: ``<member>:<epoch>``
    (a pod handing the shard over keeps its sockets until it sees another member here)."""
    return f"{STREAMS}:ready:{shard}"
