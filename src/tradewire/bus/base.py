"""The bus contract: an envelope format and the small protocol every backend implements.

Delivery is at-least-once. A backend stores messages in ``partitions`` partitions (partition =
stable hash of ``account_id:symbol``); ``tradewire.bus.consumer.Consumer`` runs the shared
policy on top of any backend: per-key order, retries in place with growing delays, and the
dead-letter queue ``ws-events.dlq`` written atomically with the ack of the original.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from tradewire.errors import UNREADABLE_JSON, PermanentError

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii  # a JSON string literal
# orjson reads integers outside [-2**63, 2**64 - 1] as floats, from 19 digits on (e.g.
# -9223372036854775809): a body with a run of 19 digits (all digits made "0", then a plain
# substring search: 1 us, a regex takes 11) goes to json. Exchange ids and times have <= 13.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_MALFORMED: tuple[type[Exception], ...] = (*UNREADABLE_JSON, KeyError, TypeError)


def partition_for(key: str, partitions: int) -> int:
    """Stable partition of a key (``account_id:symbol``); the same in every process and version."""
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True, init=False)
class Envelope:
    """One exchange event as published by the streams layer."""

    event_id: str  # stable, derived from exchange ids: duplicates share it
    account_id: int
    user_id: int
    symbol: str  # "" when the event has no symbol
    received_ms: int
    event: dict[str, Any]  # the raw exchange payload, verbatim
    synthetic: bool = False  # made by reconciliation, not received on the socket
    replay_of: str | None = None  # DLQ id when replayed by an operator
    # Optional: the JSON text ``event`` was parsed from, exactly that payload (e.g. the frame
    # of a raw ``/private/ws`` stream). ``encode`` then embeds it instead of serialising
    # ``event`` again, the costliest step of publishing. Not part of equality, not decoded.
    raw_event: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(
        self, event_id: str, account_id: int, user_id: int, symbol: str, received_ms: int,
        event: dict[str, Any], synthetic: bool = False, replay_of: str | None = None,
        raw_event: bytes | None = None,
    ) -> None:
        """The dataclass ``__init__`` (same parameters, same defaults), at half the cost: the
        fields go straight into the instance dict instead of one frozen-bypassing
        ``object.__setattr__`` each (an envelope is built for every event received)."""
        state = self.__dict__
        state["event_id"] = event_id
        state["account_id"] = account_id
        state["user_id"] = user_id
        state["symbol"] = symbol
        state["received_ms"] = received_ms
        state["event"] = event
        state["synthetic"] = synthetic
        state["replay_of"] = replay_of
        state["raw_event"] = raw_event

    @property
    def key(self) -> str:
        """Ordering key: events of one key are processed strictly in order."""
        return f"{self.account_id}:{self.symbol}"

    def encode(self) -> bytes:
        """The body: compact JSON of the fields in declaration order (``raw_event`` excepted),
        ASCII-escaped. Built by hand: the same bytes as ``json.dumps(asdict(self))`` without
        its deep copy of ``event`` (10x faster on an order update; this runs for every event
        of every account). With ``raw_event`` the event's text is embedded as it came."""
        event = self.raw_event
        if event is None:
            event = _ENCODER.encode(self.event).encode()
        replay_of = "null" if self.replay_of is None else _quote(self.replay_of)
        return b"".join((
            f'{{"event_id":{_quote(self.event_id)},"account_id":{int(self.account_id)},'
            f'"user_id":{int(self.user_id)},"symbol":{_quote(self.symbol)},'
            f'"received_ms":{int(self.received_ms)},"event":'.encode(),
            event,
            f',"synthetic":{"true" if self.synthetic else "false"},"replay_of":{replay_of}}}'
            .encode(),
        ))

    @classmethod
    def decode(cls, body: bytes) -> Envelope:
        """Parse a message body; anything malformed raises ``PermanentError``.

        Parsed with orjson (twice as fast as ``json.loads`` here, the worker decodes every
        event); a body with a run of 19 digits (an integer orjson might read as a float: outside
        64 bits) and what orjson refuses (NaN, lone surrogates, nesting deeper than 1,024) are
        read by ``json.loads``, so the accepted bodies and their values are the stdlib's; what
        the stdlib cannot read either (``RecursionError`` past its own depth) is malformed."""
        try:
            if _NINETEEN_DIGITS not in body.translate(_DIGITS_AS_ZERO):
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError:
                    data = json.loads(body)
            else:
                data = json.loads(body)
            env = cls(
                event_id=str(data["event_id"]),
                account_id=int(data["account_id"]),
                user_id=int(data["user_id"]),
                symbol=str(data.get("symbol") or ""),
                received_ms=int(data["received_ms"]),
                event=dict(data["event"]),
                synthetic=bool(data.get("synthetic", False)),
                replay_of=data.get("replay_of"),
            )
        except _MALFORMED as exc:
            raise PermanentError(f"malformed envelope: {exc!r}") from exc
        if not env.event_id:
            raise PermanentError("malformed envelope: empty event_id")
        return env


@dataclass
class Message:
    """One delivery of a stored message."""

    id: str  # backend id (Redis stream id, embedded sequence number, ...)
    partition: int
    body: bytes
    deliveries: int = 1  # how many times the backend has handed this message out


@dataclass(frozen=True)
class DeadLetter:
    """An entry of ``ws-events.dlq``: the original message and why it failed."""

    id: str
    original_id: str
    partition: int
    body: bytes
    attempts: int
    error: str
    error_type: str
    first_failed_ms: int
    last_failed_ms: int
    extra: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["body"] = self.body.decode(errors="replace")
        return out


@dataclass(frozen=True)
class PartitionDepth:
    """Backlog of one partition as seen by the consumer group (metrics, operators).

    ``lag``: stored but never delivered to the group; ``pending``: delivered, not yet acked.
    Backend caveats (Redis ``lag`` fallback, RabbitMQ per-process ``pending``) are documented
    on each backend's ``partition_depths``.
    """

    lag: int
    pending: int


Landed = Callable[[BaseException | None], None]  # a started publish's report: None = stored
StartMany = Callable[[Sequence[Envelope], Landed], bool]  # ``PublishStarter.start_publish``


@runtime_checkable
class PublishStarter(Protocol):
    """A backend that can start ``publish_many`` without awaiting (the Redis bus on its lean
    connection). ``start_publish`` writes the batch now and returns True, and calls
    ``on_done(None)`` once it is stored or ``on_done(error)`` if it may not be, later and never
    from inside the call; or returns False, having done nothing (not connected yet, say): the
    caller then awaits ``publish_many``. The streams publisher uses it so a message's bytes
    leave in the loop turn they arrived in."""

    def start_publish(self, envelopes: Sequence[Envelope], on_done: Landed) -> bool: ...


class Bus(Protocol):
    """What a backend provides. All methods are safe to call from one event loop."""

    partitions: int

    async def publish(self, envelope: Envelope) -> str:
        """Store the envelope in its partition; returns the message id. Durable when it returns."""
        ...

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Publish in order, durably, as one round trip where the backend allows; ids in order.

        Each envelope goes to the partition ``publish`` would choose, so per-key order is the
        order of ``envelopes``. On an error some of the envelopes may be stored already: a
        retry of the whole batch can duplicate them (at-least-once, like ``publish``)."""
        ...

    async def publish_raw(self, partition: int, body: bytes) -> str:
        """Store an arbitrary body (operators' replay, tests of malformed input)."""
        ...

    async def fetch(
        self, consumer: str, count: int, block_ms: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        """Hand out up to ``count`` never-delivered messages to ``consumer``; waits up to
        ``block_ms`` when there are none. Fetched messages stay pending until acked.

        ``partitions``: only those partitions (the ones this consumer owns, ``bus.ownership``);
        ``None``: all. With ``partitions`` a backend may hold messages under the partition's
        slot instead of ``consumer`` (Redis: consumer ``p<partition>``), so that a new owner
        gets the old owner's pending messages first."""
        ...

    async def ack(self, message: Message) -> None: ...

    async def dead_letter(self, message: Message, letter: DeadLetter) -> None:
        """Write ``letter`` to the DLQ and ack ``message``, atomically."""
        ...

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        """Take over messages pending longer than ``min_idle_ms`` with another consumer
        (one that died without acking); ``partitions``: only those (as for ``fetch``)."""
        ...

    async def pending(self) -> int:
        """Messages delivered but not yet acked, over all partitions."""
        ...

    async def partition_depths(self) -> dict[int, PartitionDepth]:
        """``PartitionDepth`` of every partition ``0..partitions-1`` (each key present)."""
        ...

    async def dlq_size(self) -> int: ...

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]: ...

    async def dlq_get(self, dlq_id: str) -> DeadLetter | None:
        """One DLQ entry by its id (None when there is no such entry)."""
        ...

    async def dlq_delete(self, dlq_ids: Sequence[str]) -> int:
        """Remove DLQ entries (after a replay, or a purge); returns how many were removed."""
        ...

    async def set_paused(self, paused: bool) -> None:
        """Ask every consumer of this bus to pause (or resume) consumption; shared by all
        processes using the same backend."""
        ...

    async def is_paused(self) -> bool: ...

    async def close(self) -> None: ...
