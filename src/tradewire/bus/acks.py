"""Coalesced acks of one consumer (``tradewire.bus.consumer``).

A micro-batch of events commits at once, so its messages all ack together: ``Acks.ack_all``
(the consumer's batch path) or ``Acks.ack`` from each lane in the same event-loop turn queue
the messages and wait: the queued acks are sent together by ONE
``bus.ack_many`` call (Redis: one XACK per partition, all in one pipelined round trip; SQLite:
one ``DELETE`` on the bus thread), at most one call in flight, the next one taking whatever
queued meanwhile. Each caller still awaits its
own ack: the consumer releases a message only after the bus confirmed it, and a failed call fails
every ack in it (those messages stay pending and are redelivered, as with a failed ``ack``).

Nothing is acked earlier than before: a message is queued only after its handler returned (its
batch committed). Backends without ``ack_many`` get one ``ack`` per message. RabbitMQ's
``ack_many`` writes one basic.ack frame per message, waiting only for the last write
(``multiple=True`` would also ack older deliveries still waiting in other lanes, so it is not
used).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tradewire.bus.base import Bus, Message
from tradewire.bus.lanes import cancel_all


@runtime_checkable
class SupportsAckMany(Protocol):
    """Optional backend capability: acknowledge several messages in one call."""

    async def ack_many(self, messages: Sequence[Message]) -> None:
        """Ack every message (all-or-error: on an exception none may be assumed acked)."""
        ...


class Acks:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._many = bus if isinstance(bus, SupportsAckMany) else None
        self._queued: list[tuple[Sequence[Message], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # ack_many calls made (statistics, tests)

    async def ack(self, message: Message) -> None:
        await self.ack_all((message,))

    async def ack_all(self, messages: Sequence[Message]) -> None:
        """Ack ``messages`` (all-or-error, as ``ack_many``)."""
        if self._many is None:
            for message in messages:
                await self.bus.ack(message)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((messages, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await future

    async def _send(self) -> None:
        assert self._many is not None
        while self._queued:
            await asyncio.sleep(0)  # let the rest of this turn's lanes queue their acks
            batch, self._queued = self._queued, []
            batch = [(m, f) for m, f in batch if not f.done()]  # callers cancelled meanwhile
            if not batch:
                continue
            self.calls += 1
            try:
                await self._many.ack_many([m for group, _ in batch for m in group])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            except BaseException as exc:  # cancelled (shutdown): nobody waits forever
                for _, future in batch + self._queued:
                    if not future.done():
                        future.set_exception(RuntimeError(f"ack interrupted: {exc!r}"))
                self._queued = []
                raise
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        """Stop sending (consumer shutdown); unsent acks fail, their messages stay pending."""
        sender, self._sender = self._sender, None
        if sender is not None:
            await cancel_all([sender])
        for _, future in self._queued:
            if not future.done():
                future.set_exception(RuntimeError("consumer stopped before the ack was sent"))
        self._queued = []
