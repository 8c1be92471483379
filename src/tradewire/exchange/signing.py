"""HMAC-SHA256 request signing (reference §6).

The signature covers the query string and the body concatenated directly; this client sends every
parameter in the query string (body empty), so the signed bytes are exactly the query string sent.
``signature`` is always the last parameter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal
from urllib.parse import urlencode

ParamValue = str | int | Decimal | bool
Params = Mapping[str, ParamValue | None]


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def format_value(value: ParamValue) -> str:
    """The wire form of one parameter: booleans lowercase, decimals plain (no exponent, no
    trailing zeros), so ``Decimal("0.0100")`` is sent as ``0.01``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, int | str):
        return str(value)
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


def encode_params(params: Params) -> str:
    """URL-encode parameters in their given order, skipping ``None`` values."""
    pairs = [(key, format_value(value)) for key, value in params.items() if value is not None]
    return urlencode(pairs)


def signed_query(
    params: Params, *, secret: str, timestamp_ms: int, recv_window_ms: int, body: str = ""
) -> str:
    """The exact query string of a SIGNED request: ``params``, then ``timestamp``, ``recvWindow``,
    then ``signature`` (over this query string + ``body``) last."""
    query = encode_params({**params, "timestamp": timestamp_ms, "recvWindow": recv_window_ms})
    return f"{query}&signature={sign(secret, query + body)}"
