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
