"""The owner's third line of defence: a scheduled check of the dead-letter queue.

Every ``interval_s`` (default 5 minutes) ``DlqMonitor.check()``:

* DLQ size > 0 -> one ERROR log line with the size and the oldest entry's error;
* DLQ size >= ``alert_at`` (default 10) -> a red Discord alert "DLQ backlog" queued in the
  notifications outbox (``user_id`` None) for ``Settings.alert_webhook_url``, but only when no
  alert was sent for this backlog yet, the backlog grew since the last alert, or ``cooldown_s``
  (default 1 hour) passed since it. Once the size drops below ``alert_at`` the backlog counts as
  handled, and a later one alerts afresh.

The alert memory lives in the monitor (one per deployment is expected: ``tradewire run`` or
``tradewire monitor dlq``); a restarted monitor alerts again for a standing backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.bus.base import Bus
from tradewire.clock import Clock
from tradewire.logging import log
from tradewire.notify.messages import alert_embed
from tradewire.store.outbox import enqueue_notification

logger = logging.getLogger("tradewire.dlq")


@dataclass(frozen=True)
class DlqCheck:
    """The result of one check."""

    size: int
    logged: bool  # an ERROR line was written
    alerted: bool  # an alert was queued in the outbox
    reason: str  # why (not) alerted: empty | below-threshold | new | growth | cooldown | repeat


class DlqMonitor:
    def __init__(
        self, bus: Bus, sessions: async_sessionmaker[AsyncSession], clock: Clock, *,
        webhook_url: str, interval_s: float = 300.0, alert_at: int = 10,
        cooldown_s: float = 3600.0,
    ) -> None:
        if alert_at < 1:
            raise ValueError("alert_at must be >= 1")
        self.bus, self.sessions, self.clock = bus, sessions, clock
        self.webhook_url = webhook_url
        self.interval_s, self.alert_at, self.cooldown_s = interval_s, alert_at, cooldown_s
        self.alerts = 0
        self._alerted_size: int | None = None  # backlog size at the last alert
        self._alerted_ms = 0

    async def check(self) -> DlqCheck:
        size = await self.bus.dlq_size()
        if size == 0:
            self._alerted_size = None
            return DlqCheck(0, False, False, "empty")
        oldest = await self.bus.dlq_list(1)
        error = f"{oldest[0].error_type}: {oldest[0].error}" if oldest else ""
        log(logger, logging.ERROR, "dead-letter queue is not empty", dlqSize=size, error=error,
            oldestId=oldest[0].id if oldest else None)
        if size < self.alert_at:
            self._alerted_size = None
            return DlqCheck(size, True, False, "below-threshold")
        reason = self._alert_reason(size)
        if reason == "repeat":
            return DlqCheck(size, True, False, reason)
        return DlqCheck(size, True, await self._alert(size, error), reason)

    def _alert_reason(self, size: int) -> str:
        if self._alerted_size is None:
            return "new"
        if size > self._alerted_size:
            return "growth"
        if self.clock.now_ms() - self._alerted_ms >= self.cooldown_s * 1000:
            return "cooldown"
        return "repeat"

    async def _alert(self, size: int, error: str) -> bool:
        """Queue the alert; False when there is nowhere to send it (still remembered, so the
        warning is not repeated every check)."""
        previous = self._alerted_size
        self._alerted_size, self._alerted_ms = size, self.clock.now_ms()
        if not self.webhook_url:
            log(logger, logging.WARNING, "DLQ backlog alert not sent: no alert webhook configured "
                "(TRADEWIRE_ALERT_WEBHOOK_URL)", dlqSize=size)
            return False
        grew = f" (was {previous})" if previous is not None else ""
        text = (
            f"{size} messages in the dead-letter queue{grew}; this suggests a systemic failure "
            f"(is the database down?).\nOldest error: {error[:500]}\n"
            "Inspect: `tradewire dlq list` · pause consumption: `tradewire bus pause`"
        )
        async with self.sessions.begin() as session:
            await enqueue_notification(
                session, user_id=None, webhook_url=self.webhook_url,
                payload=alert_embed("DLQ backlog", text), now=self.clock.now_ms(),
            )
        self.alerts += 1
        log(logger, logging.ERROR, "DLQ backlog alert queued", dlqSize=size)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Check now and then every ``interval_s`` until ``stop`` is set; a failed check is
        logged and retried at the next tick."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception as exc:
                log(logger, logging.WARNING, "DLQ check failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
