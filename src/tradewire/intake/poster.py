"""Posting ``RawMessage``s to the intake API, in order, from one task.

``IntakePoster.post`` retries what may succeed later (connection errors, timeouts, 5xx, 429)
with jittered exponential backoff, and drops what cannot (other 4xx), logging either way.
"""

from __future__ import annotations

import asyncio
import logging
import random

import httpx

from tradewire.intake.model import RawMessage
from tradewire.logging import log

logger = logging.getLogger("tradewire.intake.discord")

INTAKE_PATH = "/api/intake/messages"


class IntakePoster:
    """Posts ``RawMessage``s to the API: retries what may succeed later, drops what cannot."""

    def __init__(self, http: httpx.AsyncClient, backoff_s: tuple[float, float] = (0.5, 30.0),
                 timeout_s: float = 10.0) -> None:
        self.http = http
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.posted = 0
        self.dropped = 0
        self.retries = 0

    async def post(self, message: RawMessage) -> bool:
        """True when the API accepted it; False when it refused it for good (4xx)."""
        first, most = self.backoff_s
        delay = first
        while True:
            verdict = await self._attempt(message)
            if verdict is not None:
                return verdict
            self.retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, most)

    async def _attempt(self, message: RawMessage) -> bool | None:
        fields = {"channel": message.channel, "messageId": message.message_id,
                  "edit": message.edit, "deleted": message.deleted}
        try:
            response = await self.http.post(
                INTAKE_PATH, content=message.model_dump_json(),
                headers={"content-type": "application/json"}, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            log(logger, logging.WARNING, "intake API unreachable; retrying",
                error=type(exc).__name__, **fields)
            return None
        status = response.status_code
        if status < 300:
            self.posted += 1
            log(logger, logging.INFO, "message posted to intake", **fields)
            return True
        if status == 429 or status >= 500:
            log(logger, logging.WARNING, "intake API busy; retrying", status=status, **fields)
            return None
        self.dropped += 1
        log(logger, logging.ERROR, "intake API refused the message; dropped", status=status,
            error=response.text[:300], **fields)
        return False


async def post_forever(queue: asyncio.Queue[RawMessage], poster: IntakePoster) -> None:
    while True:
        message = await queue.get()
        try:
            await poster.post(message)
        finally:
            queue.task_done()


async def drain(queue: asyncio.Queue[RawMessage], posting: asyncio.Task[None],
                timeout_s: float) -> None:
    try:
        await asyncio.wait_for(queue.join(), timeout_s)
    except TimeoutError:
        log(logger, logging.ERROR, "stopping with messages not posted (one may be in flight)",
            queued=queue.qsize())
    finally:
        posting.cancel()
        await asyncio.gather(posting, return_exceptions=True)
