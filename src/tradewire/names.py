"""Every queue, stream, group, key and lock name in one place."""

from __future__ import annotations

EVENTS = "ws-events"
"""The event queue of the owner's design; partition ``p`` is ``ws-events.<p>``."""

DLQ = "ws-events.dlq"
"""Dead-letter queue: messages that failed their last attempt. Never consumed automatically."""

PAUSED = f"{EVENTS}:paused"
"""Flag (Redis key) that pauses every consumer of the bus (``tradewire bus pause``)."""

WORKER_GROUP = "workers"
"""Consumer group of the event processors."""

DEFAULT_PARTITIONS = 16


def partition_name(partition: int) -> str:
    return f"{EVENTS}.{partition}"


def lock_name(user_id: int, symbol: str) -> str:
    """Lock key of the owner's design: ``userId:symbol``."""
    return f"tradewire:lock:{user_id}:{symbol}"
