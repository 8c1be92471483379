"""Keyed and signed HTTP requests to the exchange over an injected ``httpx.AsyncClient``.

Policy only: building the exact signed query, keeping the server-time offset (re-synced once on
-1021), tracking the rate-limit headers and mapping failures into ``tradewire.errors``. The
transport is whatever the caller injects (a real connection pool, or ``ASGITransport`` over the
in-process simulator). The API secret is never logged nor shown in ``repr``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

from tradewire.clock import Clock
from tradewire.errors import TimestampOutOfWindow, UnknownOutcome
from tradewire.exchange.error_map import error_from_response, error_from_transport
from tradewire.exchange.fields import Fields
from tradewire.exchange.signing import Params, encode_params, signed_query

logger = logging.getLogger(__name__)

TIME_PATH = "/fapi/v1/time"


class Security(Enum):
    """Endpoint security types (reference §6)."""

    NONE = "NONE"  # market data: no key
    API_KEY = "API_KEY"  # USER_STREAM: key header, no signature
    SIGNED = "SIGNED"  # TRADE / USER_DATA: key header, timestamp, signature


@dataclass(frozen=True)
class RateUsage:
    """The last values of the exchange's usage headers (None until first seen)."""

    used_weight_1m: int | None = None
    order_count_10s: int | None = None
    order_count_1m: int | None = None


def _header_int(headers: httpx.Headers, name: str, previous: int | None) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.isdigit() else previous


class RestSession:
    """One API key's requests to one exchange base URL."""

    def __init__(
        self, base_url: str, api_key: str, api_secret: str, *,
        http: httpx.AsyncClient, clock: Clock, recv_window_ms: int,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret = api_secret
        self._http = http
        self._clock = clock
        self.recv_window_ms = recv_window_ms
        self.offset_ms = 0
        self.usage = RateUsage()

    def __repr__(self) -> str:
        return f"RestSession({self._base_url!r}, api_key={self._api_key[:6]!r}...)"

    def server_now_ms(self) -> int:
        """Best estimate of the exchange's clock."""
        return self._clock.now_ms() + self.offset_ms

    async def sync_time(self) -> int:
        """Measure the server-time offset (server minus local, at the round trip's midpoint)."""
        before = self._clock.now_ms()
        body = await self._send("GET", TIME_PATH, {}, Security.NONE)
        after = self._clock.now_ms()
        server = Fields(body, "server time").integer("serverTime")
        self.offset_ms = server - (before + after) // 2
        logger.info("exchange time offset %d ms", self.offset_ms)
        return self.offset_ms

    async def request(
        self, method: str, path: str, params: Params | None = None, *,
        security: Security = Security.SIGNED,
    ) -> Any:
        """Send one request and return its decoded JSON body; raise ``ExchangeError`` subclasses.

        A SIGNED request refused with -1021 re-syncs the server time and is sent once more (safe:
        -1021 means the exchange did not execute it)."""
        try:
            return await self._send(method, path, params or {}, security)
        except TimestampOutOfWindow:
            if security is not Security.SIGNED:
                raise
            logger.warning("%s %s: timestamp outside recvWindow, re-syncing time", method, path)
            await self.sync_time()
            return await self._send(method, path, params or {}, security)

    def _build(self, method: str, path: str, params: Params, security: Security) -> httpx.Request:
        if security is Security.SIGNED:
            query = signed_query(
                params, secret=self._secret, timestamp_ms=self.server_now_ms(),
                recv_window_ms=self.recv_window_ms,
            )
        else:
            query = encode_params(params)
        url = f"{self._base_url}{path}" + (f"?{query}" if query else "")
        headers = {} if security is Security.NONE else {"X-MBX-APIKEY": self._api_key}
        return self._http.build_request(method, url, headers=headers)

    async def _send(self, method: str, path: str, params: Params, security: Security) -> Any:
        what = f"{method} {path}"
        request = self._build(method, path, params, security)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, what) from exc
        self._track(response.headers)
        logger.debug("%s -> %d (weight %s)", what, response.status_code, self.usage.used_weight_1m)
        if response.status_code >= 400:
            raise error_from_response(
                response.status_code, response.text, response.headers, now_ms=self.server_now_ms()
            )
        try:
            return response.json()
        except ValueError as exc:  # a 2xx we cannot read: it may well have been executed
            status = response.status_code
            raise UnknownOutcome(f"{what}: unreadable response body", status=status) from exc

    def _track(self, headers: httpx.Headers) -> None:
        old = self.usage
        self.usage = RateUsage(
            used_weight_1m=_header_int(headers, "x-mbx-used-weight-1m", old.used_weight_1m),
            order_count_10s=_header_int(headers, "x-mbx-order-count-10s", old.order_count_10s),
            order_count_1m=_header_int(headers, "x-mbx-order-count-1m", old.order_count_1m),
        )
