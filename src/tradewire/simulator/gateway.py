"""The REST edge: parameters, API key, HMAC signature, timestamp window, weights, error bodies.

- Parameters come from the query string and/or an ``x-www-form-urlencoded`` body (query wins).
- SIGNED: ``signature = hex(HMAC_SHA256(secret, query + body))`` over the raw bytes received,
  with the ``signature`` parameter (the last one) removed; then
  ``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow`` (default 5000).
- Limits (``limits``): a ban answers 418 first; then the IP weight is charged (before the API key
  is checked); placements are counted on the account's order counters after authentication.
  Every answer carries ``X-MBX-USED-WEIGHT-1M``; counted placements the order-count headers.
- Faults (``faults``): -1008 throttles before a placement is counted, 503 unknown outcomes after
  it was executed, slow answers after everything.
- The client IP is the peer address, or the ``X-Sim-Client-Ip`` header when present: a
  simulator-only override so one test can play several egress IPs (the exchange has no such
  header).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.simulator import errors as err
from tradewire.simulator.errors import SimError
from tradewire.simulator.faults import throttled_error
from tradewire.simulator.hub import encode
from tradewire.simulator.limits import RateLimited, order_count_headers
from tradewire.simulator.runtime import Runtime

Security = Literal["NONE", "USER_STREAM", "SIGNED"]
Params = dict[str, str]

API_KEY_RE = re.compile(r"^[A-Za-z0-9]{64}$")
_SIGNATURE_RE = re.compile(rb"(?:^|&)signature=([^&]*)$")
DEFAULT_RECV_WINDOW = 5000
CLIENT_IP_HEADER = "X-Sim-Client-Ip"
NO_ORDERS = (0, 0)


@dataclass(frozen=True)
class Call:
    api_key: str  # "" on public endpoints
    params: Params


Handler = Callable[[Call], Any]
Weight = Callable[[Params], int]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    security: Security
    handler: Handler
    weight: int | Weight = 1
    orders: tuple[int, int] = NO_ORDERS  # cost on the account's (10 s, 1 min) order counters
    placement: str | None = None  # the fault-injection name of a placement endpoint

    def weight_of(self, params: Params) -> int:
        return self.weight(params) if callable(self.weight) else self.weight


def merge_params(query: bytes, body: bytes) -> Params:
    params = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    params.update(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    return params


def split_signature(query: bytes, body: bytes) -> tuple[bytes, str] | None:
    """The signed payload and the signature sent, or None when no signature ends the request."""
    found = _SIGNATURE_RE.search(body)
    if found:
        return query + body[: found.start()], found.group(1).decode("latin-1")
    found = _SIGNATURE_RE.search(query)
    if found and not body:
        return query[: found.start()], found.group(1).decode("latin-1")
    return None


def verify_signature(secret: str, query: bytes, body: bytes, params: Params) -> None:
    split = split_signature(query, body)
    if split is None:
        if params.get("signature"):
            raise err.reject(err.BAD_SIGNATURE)
        raise err.missing("signature")
    payload, sent = split
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sent.lower()):
        raise err.reject(err.BAD_SIGNATURE)


def check_timestamp(params: Params, now: int) -> None:
    timestamp = _int_param(params, "timestamp", None)
    window = _int_param(params, "recvWindow", DEFAULT_RECV_WINDOW)
    if timestamp >= now + 1000:
        raise err.reject(err.TS_AHEAD)
    if now - timestamp > window:
        raise err.reject(err.TS_OUTSIDE_WINDOW)


def _int_param(params: Params, name: str, default: int | None) -> int:
    raw = params.get(name, "")
    if raw == "" and default is not None:
        return default
    if not raw.isdigit():
        raise err.missing(name)
    return int(raw)


def authenticate(rt: Runtime, request: Request, security: Security, query: bytes,
                 body: bytes, params: Params) -> str:
    """The caller's API key after the checks its endpoint's security type asks for."""
    if security == "NONE":
        return ""
    api_key = request.headers.get("X-MBX-APIKEY", "")
    if not API_KEY_RE.match(api_key):
        raise err.unauthorized(err.API_KEY_FORMAT)
    if not rt.engine.has_account(api_key):
        raise err.unauthorized(err.API_KEY_INVALID)
    if security == "SIGNED":
        verify_signature(rt.engine.account(api_key).api_secret, query, body, params)
        check_timestamp(params, rt.now())
    return api_key


def client_ip(connection: HTTPConnection) -> str:
    """The peer's address, or the simulator-only ``X-Sim-Client-Ip`` override."""
    override = connection.headers.get(CLIENT_IP_HEADER)
    if override:
        return override
    return connection.client.host if connection.client else "unknown"


def risk_reducing(params: Params) -> bool:
    """reduceOnly / closePosition placements (exempt from -1008 throttling)."""
    return any(params.get(name, "").lower() == "true" for name in ("reduceOnly", "closePosition"))


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status_code=status, headers=headers,
                    media_type="application/json")


@dataclass
class _Exchange:
    """One request through the edge: who sent it and the headers its answer carries."""

    ip: str
    api_key: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def _execute(rt: Runtime, endpoint: Endpoint, request: Request, query: bytes, body: bytes,
             params: Params, ex: _Exchange) -> Any:
    rt.limits.charge_weight(ex.ip, endpoint.weight_of(params), rt.now())
    ex.api_key = authenticate(rt, request, endpoint.security, query, body, params)
    placement = endpoint.placement
    if placement and rt.faults.take_throttle(ex.api_key, placement,
                                             risk_reducing=risk_reducing(params)):
        raise throttled_error()
    if endpoint.orders != NO_ORDERS:
        counts = rt.limits.charge_order(ex.api_key, rt.now(), ip=ex.ip, cost=endpoint.orders)
        ex.headers.update(order_count_headers(*counts))
    result = endpoint.handler(Call(ex.api_key, params))
    unknown = rt.faults.take_unknown_outcome(ex.api_key, placement) if placement else None
    if unknown is not None:
        raise unknown
    return result


def _error_headers(rt: Runtime, exc: SimError) -> dict[str, str]:
    if not isinstance(exc, RateLimited):
        return {}
    headers = dict(exc.headers)
    if rt.limits.config.retry_after_header:
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers


def route(rt: Runtime, endpoint: Endpoint) -> Route:
    """A Starlette route running one exchange endpoint with the exchange's edge rules."""

    async def handle(request: Request) -> Response:
        query: bytes = request.scope["query_string"]
        body = await request.body()
        params = merge_params(query, body)
        ex = _Exchange(client_ip(request))
        rt.tick()
        try:
            result, status = _execute(rt, endpoint, request, query, body, params, ex), 200
        except SimError as exc:
            result, status = exc.body(), exc.http_status
            ex.headers.update(_error_headers(rt, exc))
        finally:
            rt.publish()
        ex.headers["X-MBX-USED-WEIGHT-1M"] = str(rt.limits.used_weight(ex.ip, rt.now()))
        delay_s = rt.faults.delay_s(ex.api_key)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return json_response(result, status, ex.headers)

    return Route(endpoint.path, handle, methods=[endpoint.method])
