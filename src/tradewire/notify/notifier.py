"""The notifier role: sends the outbox's due messages to their webhooks.

Rows are claimed (leased; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so several notifiers never
send the same row), sent, and marked sent. A 429 from Discord re-schedules the row after its
``retry_after``; other transient failures back off exponentially up to ``max_attempts``, then
the row is marked FAILED and kept for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.clock import Clock
from tradewire.errors import NotificationError
from tradewire.logging import bind, log
from tradewire.notify.discord import PermanentNotificationError, send_webhook
from tradewire.store import outbox
from tradewire.store.tables import Notification, NotificationStatus

logger = logging.getLogger("tradewire.notifier")


class Notifier:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        poll_s: float = 0.5,
        batch: int = 50,
        max_attempts: int = 8,
    ) -> None:
        self.sessions = sessions
        self.http = http
        self.clock = clock
        self.poll_s = poll_s
        self.batch = batch
        self.max_attempts = max_attempts
        self.sent = 0
        self.failed = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.send_due()
            except Exception as exc:  # database briefly unavailable: try again next tick
                log(logger, logging.ERROR, "notifier pass failed", error=repr(exc))
                busy = 0
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)

    async def send_due(self) -> int:
        """Send what is due now; returns how many rows were attempted."""
        async with self.sessions.begin() as session:
            rows = await outbox.claim_due(session, self.clock.now_ms(), self.batch)
        await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Send until nothing is due (tests, demo); waits out short retry delays."""
        async with asyncio.timeout(timeout_s):
            while True:
                if await self.send_due():
                    continue
                async with self.sessions() as session:
                    pending = (await outbox.count_by_status(session)).get(
                        NotificationStatus.PENDING, 0
                    )
                if not pending:
                    return
                await asyncio.sleep(0.05)

    async def _send(self, row: Notification) -> None:
        with bind(userId=row.user_id, notificationId=row.id):
            try:
                await send_webhook(self.http, row.webhook_url, json.loads(row.payload))
            except PermanentNotificationError as exc:
                await self._give_up(row, str(exc))
            except NotificationError as exc:
                await self._retry(row, exc)
            else:
                async with self.sessions.begin() as session:
                    await outbox.mark_sent(session, row.id, self.clock.now_ms())
                self.sent += 1

    async def _retry(self, row: Notification, exc: NotificationError) -> None:
        rate_limited = exc.retry_after_s is not None  # Discord said when: not a failure
        if not rate_limited and row.attempts >= self.max_attempts:
            await self._give_up(row, f"{exc} after {row.attempts} attempts")
            return
        delay_s = exc.retry_after_s if exc.retry_after_s is not None else 2.0 ** row.attempts
        log(logger, logging.WARNING, "notification deferred", error=str(exc),
            retryInS=round(delay_s, 3))
        async with self.sessions.begin() as session:
            await outbox.mark_retry(session, row.id, str(exc),
                                    self.clock.now_ms() + int(delay_s * 1000))

    async def _give_up(self, row: Notification, error: str) -> None:
        log(logger, logging.ERROR, "notification failed for good", error=error)
        async with self.sessions.begin() as session:
            await outbox.mark_failed(session, row.id, error)
        self.failed += 1
