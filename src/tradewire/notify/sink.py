"""A local webhook sink standing in for Discord (tests, demo): records every message it gets.

``WebhookSink(rate_limit_first=n)`` answers the first ``n`` posts with Discord's 429 body
(``{"retry_after": ..., "global": false}``) so the notifier's back-off can be checked.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tradewire.errors import UNREADABLE_JSON


class WebhookSink:
    def __init__(self, *, rate_limit_first: int = 0, retry_after_s: float = 0.2) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []  # (webhook path, body)
        self.rejected = 0
        self._rate_limit_left = rate_limit_first
        self._retry_after_s = retry_after_s
        self._arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/hooks/{name:path}", self._post, methods=["POST"])])

    async def _post(self, request: Request) -> Response:
        if self._rate_limit_left > 0:
            self._rate_limit_left -= 1
            self.rejected += 1
            body = {"message": "You are being rate limited.", "retry_after": self._retry_after_s}
            return JSONResponse(body, status_code=429)
        try:
            payload = json.loads(await request.body())
        except UNREADABLE_JSON:
            return JSONResponse({"message": "Cannot send an empty message", "code": 50006}, 400)
        self.messages.append((request.path_params["name"], payload))
        self._arrived.set()
        return Response(status_code=204)

    def for_hook(self, name: str) -> list[dict[str, Any]]:
        return [body for hook, body in self.messages if hook == name]

    def titles(self, name: str) -> list[str]:
        return [str(body["embeds"][0]["title"]) for body in self.for_hook(name)]

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until at least ``count`` messages have arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
