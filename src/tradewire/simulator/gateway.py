"""The REST edge: parameters, API key, HMAC signature, timestamp window, weights, error bodies.

- Parameters come from the query string and/or an ``x-www-form-urlencoded`` body (query wins).
- SIGNED: ``signature = hex(HMAC_SHA256(secret, query + body))`` over the raw bytes received,
  with the ``signature`` parameter (the last one) removed; then
  ``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow`` (default 5000).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.simulator import errors as err
from tradewire.simulator.errors import SimError
from tradewire.simulator.hub import encode
from tradewire.simulator.runtime import Runtime

Security = Literal["NONE", "USER_STREAM", "SIGNED"]
Params = dict[str, str]

API_KEY_RE = re.compile(r"^[A-Za-z0-9]{64}$")
_SIGNATURE_RE = re.compile(rb"(?:^|&)signature=([^&]*)$")
DEFAULT_RECV_WINDOW = 5000


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
    order: bool = False  # counts against the account's order rate limits

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


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status_code=status, headers=headers,
                    media_type="application/json")


def route(rt: Runtime, endpoint: Endpoint) -> Route:
    """A Starlette route running one exchange endpoint with the exchange's edge rules."""

    async def handle(request: Request) -> Response:
        query: bytes = request.scope["query_string"]
        body = await request.body()
        params = merge_params(query, body)
        ip = request.client.host if request.client else "unknown"
        headers: dict[str, str] = {}
        rt.tick()
        try:
            rt.limits.charge_weight(ip, endpoint.weight_of(params), rt.now())
            api_key = authenticate(rt, request, endpoint.security, query, body, params)
            if endpoint.order:
                ten, minute = rt.limits.charge_order(api_key, rt.now())
                headers["X-MBX-ORDER-COUNT-10S"] = str(ten)
                headers["X-MBX-ORDER-COUNT-1M"] = str(minute)
            result, status = endpoint.handler(Call(api_key, params)), 200
        except SimError as exc:
            result, status = exc.body(), exc.http_status
        finally:
            rt.publish()
        headers["X-MBX-USED-WEIGHT-1M"] = str(rt.limits.used_weight(ip, rt.now()))
        return json_response(result, status, headers)

    return Route(endpoint.path, handle, methods=[endpoint.method])
