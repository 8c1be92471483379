"""Exchange answers and transport failures mapped into ``tradewire.errors`` (reference §7, §8).

The one rule that matters for money: anything after which the request *may* have been executed
is ``UnknownOutcome`` (the caller must query before retrying); only failures where it certainly was
not executed are ``ExchangeUnavailable``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import httpx

from tradewire.errors import (
    UNREADABLE_JSON,
    AuthenticationError,
    ExchangeError,
    ExchangeUnavailable,
    ListenKeyInvalid,
    OrderRejected,
    RateLimited,
    TimestampOutOfWindow,
    UnknownOrder,
    UnknownOutcome,
)

_BY_CODE: dict[int, type[ExchangeError]] = {
    -1021: TimestampOutOfWindow,
    -1022: AuthenticationError,
    -2014: AuthenticationError,
    -2015: AuthenticationError,
    -2011: UnknownOrder,
    -2013: UnknownOrder,
    -1125: ListenKeyInvalid,
    # "execution status unknown": the request may have been executed
    -1000: UnknownOutcome,
    -1006: UnknownOutcome,
    -1007: UnknownOutcome,
}
IP_RATE_LIMIT = -1003  # request weight of the IP (and "IP banned until ..." with 418)
ORDER_RATE_LIMIT = -1015  # new orders of the account
_RATE_LIMIT_CODES = frozenset({IP_RATE_LIMIT, ORDER_RATE_LIMIT})
_RATE_LIMIT_STATUSES = frozenset({418, 429})
_BANNED_UNTIL = re.compile(r"banned until (\d{10,})")
_ORDERS_PER = re.compile(r"orders per (\w+)", re.IGNORECASE)
_INTERVAL_S = {"SECOND": 1.0, "TEN_SECONDS": 10.0, "10S": 10.0, "MINUTE": 60.0, "DAY": 86_400.0}

# Failures where the request bytes never reached the exchange.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# Failures after the request may have been received: the outcome is unknown.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def parse_error_body(text: str) -> tuple[int | None, str]:
    """``(code, msg)`` from an error body; ``(None, text)`` when it is not ``{"code","msg"}``."""
    try:
        body = json.loads(text)
    except UNREADABLE_JSON:
        return None, text[:200]
    if not isinstance(body, dict):
        return None, text[:200]
    code = body.get("code")
    msg = body.get("msg")
    code_int = code if isinstance(code, int) and not isinstance(code, bool) else None
    return code_int, msg if isinstance(msg, str) else text[:200]


def retry_after_seconds(msg: str, headers: Mapping[str, str], now_ms: int) -> float | None:
    """How long to back off: the ``Retry-After`` header, else "IP banned until <ms>" in the text."""
    header = headers.get("retry-after")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    match = _BANNED_UNTIL.search(msg)
    if match:
        return max(0.0, (int(match.group(1)) - now_ms) / 1000)
    return None


def order_limit_window_s(msg: str) -> float | None:
    """The interval named by a -1015 message ("... 300 orders per TEN_SECONDS."), in seconds."""
    match = _ORDERS_PER.search(msg)
    return _INTERVAL_S.get(match.group(1).upper()) if match else None


def error_from_response(
    status: int, text: str, headers: Mapping[str, str], *, now_ms: int
) -> ExchangeError:
    """The exception for one non-2xx answer."""
    code, msg = parse_error_body(text)
    if status in _RATE_LIMIT_STATUSES or code in _RATE_LIMIT_CODES:
        wait = retry_after_seconds(msg, headers, now_ms)
        return RateLimited(msg or f"HTTP {status}", code=code, status=status, retry_after_s=wait)
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code](msg, code=code, status=status)
    return _by_status(status, code, msg)


def _by_status(status: int, code: int | None, msg: str) -> ExchangeError:
    if status == 503 and "unknown error" in msg.lower():
        return UnknownOutcome(msg, code=code, status=status)
    if status == 408:  # backend timeout: the order may still be processed
        return UnknownOutcome(msg or "request timeout", code=code, status=status)
    if status >= 500:
        return ExchangeUnavailable(msg or f"HTTP {status}", code=code, status=status)
    if status == 401:
        return AuthenticationError(msg or "unauthorized", code=code, status=status)
    if code is not None:
        return OrderRejected(msg, code=code, status=status)
    return ExchangeError(f"HTTP {status}: {msg}", status=status)


def error_from_transport(exc: httpx.TransportError, what: str) -> ExchangeError:
    """The exception for a failed exchange of bytes (``what`` names the request, never params)."""
    if isinstance(exc, _MAYBE_SENT):
        return UnknownOutcome(f"{what}: {type(exc).__name__}, outcome unknown")
    if isinstance(exc, _NOT_SENT):
        return ExchangeUnavailable(f"{what}: {type(exc).__name__}")
    return ExchangeUnavailable(f"{what}: {type(exc).__name__}: {exc}")
