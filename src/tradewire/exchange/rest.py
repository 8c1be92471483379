"""Keyed and signed HTTP requests to the exchange over an injected ``httpx.AsyncClient``.

Policy only: building the exact signed query, keeping the server-time offset (re-synced once on
-1021), spending the rate budgets before each request (``exchange.budget``: the shared IP weight
budget and the account's order budget; the request is signed only once it may go, so its
timestamp is fresh), re-syncing them from the rate-limit headers, blocking them on 429/418, and
mapping failures into ``tradewire.errors``. The transport is whatever the caller injects (a real
connection pool, or ``ASGITransport`` over the in-process simulator). The API secret is never
logged nor shown in ``repr``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

from tradewire.clock import Clock
from tradewire.errors import (
    UNREADABLE_JSON,
    RateLimited,
    TimestampOutOfWindow,
    UnknownOutcome,
)
from tradewire.exchange.budget import RateBudget, is_priority, request_cost
from tradewire.exchange.error_map import (
    ORDER_RATE_LIMIT,
    error_from_response,
    error_from_transport,
    order_limit_window_s,
)
from tradewire.exchange.fields import Fields
from tradewire.exchange.lean_http import LeanHttp
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


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


class RestSession:
    """One API key's requests to one exchange base URL."""

    def __init__(
        self, base_url: str, api_key: str, api_secret: str, *,
        http: httpx.AsyncClient, clock: Clock, recv_window_ms: int,
        ip_budget: RateBudget, order_budget: RateBudget, lean: LeanHttp | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret = api_secret
        self._http = http
        self._lean = lean
        self._clock = clock
        self.recv_window_ms = recv_window_ms
        self.offset_ms = 0
        self.usage = RateUsage()
        self.ip_budget = ip_budget
        self.order_budget = order_budget

    def __repr__(self) -> str:
        return f"RestSession({self._base_url!r}, api_key={self._api_key[:6]!r}...)"

    def signs_with(self, api_key: str, api_secret: str) -> bool:
        """These are the credentials the session sends and signs with (constant-time)."""
        same_key = hmac.compare_digest(self._api_key.encode(), api_key.encode())
        same_secret = hmac.compare_digest(self._secret.encode(), api_secret.encode())
        return same_key and same_secret

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
        self.ip_budget.offset_ms = self.order_budget.offset_ms = self.offset_ms
        logger.info("exchange time offset %d ms", self.offset_ms)
        return self.offset_ms

    async def request(
        self, method: str, path: str, params: Params | None = None, *,
        security: Security = Security.SIGNED, lean: bool = False,
    ) -> Any:
        """Send one request and return its decoded JSON body; raise ``ExchangeError`` subclasses.

        Sent once more (both answers mean the exchange did not execute it): a SIGNED request
        refused with -1021, after re-syncing the server time; and a request refused with 429,
        once the budget it exceeded allows (a 418 ban is raised at once).

        ``lean``: an idempotent request without a signature nor a body, sent over the session's
        ``LeanHttp`` when it has one (``exchange.lean_http``); budgets, headers and errors are
        handled exactly as on httpx."""
        params = params or {}
        via_lean = lean and self._lean is not None and security is not Security.SIGNED
        try:
            return await self._send_in_time(method, path, params, security, via_lean)
        except RateLimited as exc:
            if exc.status == 418:
                raise
            return await self._send_in_time(method, path, params, security, via_lean)

    async def _send_in_time(
        self, method: str, path: str, params: Params, security: Security, lean: bool = False
    ) -> Any:
        try:
            return await self._send(method, path, params, security, lean)
        except TimestampOutOfWindow:
            if security is not Security.SIGNED:
                raise
            logger.warning("%s %s: timestamp outside recvWindow, re-syncing time", method, path)
            await self.sync_time()
            return await self._send(method, path, params, security)

    def _build(self, method: str, path: str, params: Params, security: Security) -> httpx.Request:
        if security is Security.SIGNED:
            query = signed_query(
                params, secret=self._secret, timestamp_ms=self.server_now_ms(),
                recv_window_ms=self.recv_window_ms,
            )
        else:
            query = encode_params(params)
        url = f"{self._base_url}{path}" + (f"?{query}" if query else "")
        return self._http.build_request(method, url, headers=self._key_header(security))

    def _key_header(self, security: Security) -> dict[str, str]:
        return {} if security is Security.NONE else {"X-MBX-APIKEY": self._api_key}

    async def _spend_budgets(self, method: str, path: str, params: Params) -> None:
        """Wait until the account's order budget and the IP's weight budget allow the request."""
        cost = request_cost(method, path, params)
        priority = is_priority(method, path, params)
        if cost.orders_10s or cost.orders_1m:
            await self.order_budget.acquire((cost.orders_10s, cost.orders_1m), priority=priority)
        await self.ip_budget.acquire((cost.weight,), priority=priority)

    async def _send(
        self, method: str, path: str, params: Params, security: Security, lean: bool = False
    ) -> Any:
        what = f"{method} {path}"
        await self._spend_budgets(method, path, params)
        sent_at = self.ip_budget.now_ms(), self.order_budget.now_ms()
        status: int
        headers: Mapping[str, str]
        try:
            if lean and self._lean is not None:
                query = encode_params(params)
                answer = await self._lean.request(
                    method, path + (f"?{query}" if query else ""), self._key_header(security))
                status, headers, body = answer.status, answer.headers, answer.body
            else:
                response = await self._http.send(self._build(method, path, params, security))
                status, headers, body = response.status_code, response.headers, response.content
        except httpx.TransportError as exc:
            raise error_from_transport(exc, what) from exc
        self._track(headers, sent_at)
        logger.debug("%s -> %d (weight %s)", what, status, self.usage.used_weight_1m)
        if status >= 400:
            text = body.decode("utf-8", "replace")
            error = error_from_response(status, text, headers, now_ms=self.server_now_ms())
            if isinstance(error, RateLimited):
                self._back_off(error, what)
            raise error
        try:
            return json.loads(body)
        except UNREADABLE_JSON as exc:  # a 2xx we cannot read: it may well have been executed
            raise UnknownOutcome(f"{what}: unreadable response body", status=status) from exc

    def _back_off(self, error: RateLimited, what: str) -> None:
        """Block the budget the limit belongs to: the account's orders for -1015, else the IP
        (every client behind it) for Retry-After / "banned until", or a whole window."""
        if error.code == ORDER_RATE_LIMIT and error.status != 418:
            budget = self.order_budget
            fallback = order_limit_window_s(str(error)) or budget.longest_window_s
        else:
            budget = self.ip_budget
            fallback = budget.longest_window_s * (2 if error.status == 418 else 1)
        seconds = error.retry_after_s if error.retry_after_s is not None else fallback
        budget.block(seconds)
        logger.warning("%s: rate limited (HTTP %s, code %s); %s budget blocked for %.1f s",
                       what, error.status, error.code, budget.name, seconds)

    def _track(self, headers: Mapping[str, str], sent_at: tuple[int, int]) -> None:
        old = self.usage
        new = RateUsage(
            used_weight_1m=_header_int(headers, "x-mbx-used-weight-1m"),
            order_count_10s=_header_int(headers, "x-mbx-order-count-10s"),
            order_count_1m=_header_int(headers, "x-mbx-order-count-1m"),
        )
        self.ip_budget.resync((new.used_weight_1m,), sent_at[0])
        self.order_budget.resync((new.order_count_10s, new.order_count_1m), sent_at[1])
        self.usage = RateUsage(
            used_weight_1m=_pick(new.used_weight_1m, old.used_weight_1m),
            order_count_10s=_pick(new.order_count_10s, old.order_count_10s),
            order_count_1m=_pick(new.order_count_1m, old.order_count_1m),
        )


def _pick(new: int | None, old: int | None) -> int | None:
    return old if new is None else new
