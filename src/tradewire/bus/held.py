"""In-process bookkeeping of delivered, unacked messages, shared by the backends that keep it
themselves (the in-memory bus, and RabbitMQ within one process): who holds each message since
when, idle takeover (``reclaim``) and idle-time refresh (``touch``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol, TypeVar

from tradewire.bus.base import Message


class Held(Protocol):
    message: Message
    consumer: str
    delivered_at: float  # event-loop time (monotonic seconds)


H = TypeVar("H", bound=Held)


def claim_idle(
    entries: Iterable[H], consumer: str, min_idle_ms: int, count: int, now: float,
    partitions: Collection[int] | None = None,
) -> list[Message]:
    """Take over up to ``count`` entries idle for at least ``min_idle_ms`` (in the given order):
    they now belong to ``consumer`` and count one more delivery."""
    claimed: list[Message] = []
    for entry in entries:
        if len(claimed) >= count:
            break
        if partitions is not None and entry.message.partition not in partitions:
            continue
        if (now - entry.delivered_at) * 1000 >= min_idle_ms:
            entry.consumer, entry.delivered_at = consumer, now
            entry.message = dataclasses.replace(
                entry.message, deliveries=entry.message.deliveries + 1
            )
            claimed.append(dataclasses.replace(entry.message))
    return claimed


def refresh(held: Mapping[str, H], consumer: str, messages: Iterable[Message], now: float) -> None:
    """Reset the idle time of messages still being worked on (XCLAIM JUSTID semantics: the
    delivery count is unchanged), so that ``claim_idle`` does not take them away."""
    for message in messages:
        entry = held.get(message.id)
        if entry is not None:
            entry.consumer, entry.delivered_at = consumer, now
