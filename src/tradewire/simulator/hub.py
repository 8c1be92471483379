"""User-data sockets: who is subscribed to which listenKey, and fan-out of engine events.

Each socket has its own queue drained by its own sender task, so a slow socket never delays
the others; a socket whose queue overflows is closed (the exchange drops slow consumers).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from tradewire.simulator.core import Delivery

MAX_QUEUE = 10_000
ALWAYS_DELIVERED = frozenset({"listenKeyExpired"})


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class _Close:
    code: int


def encode(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


class Session:
    """One connected socket. ``combined`` sockets get ``{"stream": key, "data": event}``."""

    def __init__(self, socket: Socket, *, combined: bool, max_queue: int = MAX_QUEUE) -> None:
        self.socket = socket
        self.combined = combined
        self.max_queue = max_queue
        self.filters: dict[str, frozenset[str] | None] = {}  # listenKey -> event names or all
        self.queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self.closing = False

    def wants(self, listen_key: str, event: str) -> bool:
        if listen_key not in self.filters:
            return False
        names = self.filters[listen_key]
        return names is None or event in names or event in ALWAYS_DELIVERED

    def offer(self, listen_key: str, payload: dict[str, Any]) -> None:
        """Queue one event (never blocks); overflow closes the socket."""
        if self.closing or not self.wants(listen_key, str(payload.get("e", ""))):
            return
        if self.queue.qsize() >= self.max_queue:
            self.close(1008)
            return
        message = {"stream": listen_key, "data": payload} if self.combined else payload
        self.queue.put_nowait(encode(message))

    def reply(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self.queue.put_nowait(encode(message))

    def close(self, code: int, *, drop_pending: bool = True) -> None:
        """Ask the sender task to close the socket (first dropping what is not yet sent)."""
        if self.closing:
            return
        self.closing = True
        if drop_pending:
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(_Close(code))

    async def send_loop(self) -> None:
        """Send queued messages in order until closed or the peer is gone."""
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item, _Close):
                    await self.socket.close(code=item.code)
                    return
                await self.socket.send_text(item)
            except Exception:  # the peer went away; the reader sees the disconnect
                return


class Hub:
    """Routes engine deliveries to the sessions subscribed to their listenKey."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[Session]] = defaultdict(set)
        self.sessions: set[Session] = set()

    def add(self, session: Session) -> None:
        self.sessions.add(session)

    def subscribe(self, session: Session, listen_key: str,
                  events: frozenset[str] | None = None) -> None:
        session.filters[listen_key] = events
        self._by_key[listen_key].add(session)

    def unsubscribe(self, session: Session, listen_key: str) -> None:
        session.filters.pop(listen_key, None)
        subscribers = self._by_key.get(listen_key)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._by_key[listen_key]

    def remove(self, session: Session) -> None:
        for key in list(session.filters):
            self.unsubscribe(session, key)
        self.sessions.discard(session)

    def listeners(self, listen_key: str | None) -> int:
        """Sockets currently subscribed to ``listen_key``."""
        return len(self._by_key.get(listen_key, ())) if listen_key else 0

    def dispatch(self, deliveries: Iterable[Delivery]) -> None:
        """Offer each event to the sessions subscribed to its key right now. Nothing is kept
        for sockets that connect later: events produced during a gap are lost, as on the
        exchange (reference §1.8)."""
        for delivery in deliveries:
            if delivery.listen_key is None:
                continue
            for session in list(self._by_key.get(delivery.listen_key, ())):
                session.offer(delivery.listen_key, delivery.payload)

    def drop(self, listen_keys: set[str] | None = None, *, code: int = 1011) -> int:
        """Close every session (or those subscribed to one of ``listen_keys``); how many."""
        chosen = [s for s in self.sessions
                  if listen_keys is None or listen_keys & set(s.filters)]
        for session in chosen:
            session.close(code)
        return len(chosen)
