"""TradingView webhook alerts → the intake's ``RawMessage`` (pure; the route is in
``api/routes_intake.py``).

TradingView cannot send headers, so the alert carries a shared secret (``TRADEWIRE_TRADINGVIEW_
SECRET``), compared in constant time. Three body shapes are accepted:

1. **JSON** (sent as ``application/json`` when the message is valid JSON)::

       {"secret": "…", "alert_id": "{{ticker}}-{{timenow}}", "timestamp": "{{timenow}}",
        "max_lag": 30, "symbol": "{{ticker}}", "side": "long", "entry": "market",
        "sl": 58000, "tp": [61000, 63000], "leverage": 10, "size": "5%"}

   ``alert_id`` is required (the idempotency key: ``tradingview:tradingview:<alert_id>``);
   ``side`` or ``action`` is buy/long or sell/short; ``entry`` is ``"market"`` (default) or a
   price; ``sl`` a price or a percentage (``"2%"``); ``tp`` a price or a list; ``size`` a
   percentage of the channel's ``notional_base_usdt`` (``"5%"`` or ``5``; capped by the
   profile) — absolute USDT sizes come from the channel profile, never from the alert;
   ``timestamp`` (ISO 8601 like ``{{timenow}}``, or epoch seconds/milliseconds) with ``max_lag``
   (seconds, can only tighten the channel's ``max_lag_s``) makes old alerts stale. Symbols like
   ``BINANCE:BTCUSDT.P`` or ``BTCUSDT.P`` become ``BTCUSDT``. Unknown keys are ignored.
2. **A JSON first line and signal text below it** (``text/plain``): the first line carries
   ``secret``/``alert_id``/``timestamp``/``max_lag``; the text is read by the signal parser.
3. **Plain signal text** (``text/plain``): the secret must come as ``?secret=…`` in the webhook
   URL (and an optional ``?alert_id=``). Without an alert id the key is the text's hash within
   the dedupe window, so TradingView's retries are duplicates. Keep in mind that a secret in the
   URL may end up in proxy access logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tradewire.errors import UNREADABLE_JSON, InvalidInput
from tradewire.intake.model import (
    Decision,
    EntryType,
    Kind,
    ParsedSignal,
    RawMessage,
    Source,
    TakeProfit,
)

CHANNEL = "tradingview"
MAX_BODY_BYTES = 20_000
_SIDES = {"buy": "LONG", "long": "LONG", "sell": "SHORT", "short": "SHORT"}
_META = ("secret", "alert_id", "timestamp", "max_lag")


@dataclass(frozen=True)
class Envelope:
    """An alert body taken apart: who sent it (secret), its metadata, and the signal."""

    secret: str
    meta: dict[str, Any]  # alert_id, timestamp, max_lag (and, for JSON alerts, the fields)
    text: str | None  # signal text for the parser; None: a JSON alert


@dataclass(frozen=True)
class Alert:
    raw: RawMessage
    parsed: ParsedSignal | None  # None: let the parser read ``raw.text``
    max_lag_s: float | None


def secret_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset secret matches nothing."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def open_envelope(body: str, *, query_secret: str = "", query_alert_id: str = "") -> Envelope:
    """Split a body into secret, metadata and signal (see the module docstring)."""
    text = body.strip()
    meta = _json_object(text)
    signal_text: str | None = None
    if meta is None:
        first, _, rest = text.partition("\n")
        meta = _json_object(first.strip())
        if meta is None or not rest.strip():
            meta, rest = {}, text
        signal_text = rest.strip()
    if query_alert_id and not meta.get("alert_id"):
        meta["alert_id"] = query_alert_id
    secret = meta.pop("secret", None) or query_secret
    return Envelope(str(secret), meta, signal_text)


def to_alert(envelope: Envelope, now_ms: int, bucket_ms: int) -> Alert:
    """The intake message of an authenticated alert; ``InvalidInput`` when it has no identity.
    Unreadable fields are not errors here: the alert is recorded and rejected with a reason."""
    alert_id = str(envelope.meta.get("alert_id") or "").strip()
    if not alert_id:
        if envelope.text is None:
            raise InvalidInput("a JSON alert needs an alert_id", field="alert_id")
        digest = hashlib.sha256(envelope.text.encode()).hexdigest()[:24]
        alert_id = f"text-{digest}-{now_ms // bucket_ms}"
    if len(alert_id) > 200:
        raise InvalidInput("alert_id is longer than 200 characters", field="alert_id")
    problems: list[str] = []
    sent_at = _timestamp_ms(envelope.meta.get("timestamp"), problems) or now_ms
    max_lag = _positive_float(envelope.meta.get("max_lag"), "max_lag", problems)
    parsed = alert_signal(envelope.meta) if envelope.text is None else None
    if problems:
        parsed = ParsedSignal(Decision.REJECT, Kind.NEW, "; ".join(problems))
    text = envelope.text if envelope.text is not None else json.dumps(envelope.meta, default=str)
    raw = RawMessage(source=Source.TRADINGVIEW, channel=CHANNEL, message_id=alert_id,
                     sent_at_ms=max(1, sent_at), text=text[:20_000])
    return Alert(raw, parsed, max_lag)


class _AlertFields(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    symbol: str
    side: str | None = None
    action: str | None = None
    entry: str | None = None
    sl: str
    tp: str | list[str]
    leverage: int | None = None
    size: str | None = None


def alert_signal(document: Mapping[str, Any]) -> ParsedSignal:
    """A JSON alert's signal; REJECT with the reason when a field is missing or unreadable."""
    try:
        fields = _AlertFields.model_validate({k: v for k, v in document.items() if k not in _META})
        return _signal(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return ParsedSignal(Decision.REJECT, Kind.NEW, f"alert field {where}: {first['msg']}")
    except (InvalidInput, InvalidOperation, ValueError) as exc:
        return ParsedSignal(Decision.REJECT, Kind.NEW, f"alert: {exc}")


def _signal(fields: _AlertFields) -> ParsedSignal:
    side = _SIDES.get((fields.side or fields.action or "").strip().lower())
    if side is None:
        raise InvalidInput(f"side/action {fields.side or fields.action!r} does not open a "
                           "position (buy, sell, long or short)")
    entry = (fields.entry or "market").strip().lower()
    stop, stop_pct = _price_or_percent(fields.sl)
    targets = fields.tp if isinstance(fields.tp, list) else [fields.tp]
    size_pct = None if fields.size is None else _number(fields.size.strip().rstrip("%"))
    return ParsedSignal(
        Decision.EXECUTE, Kind.NEW, "tradingview alert", symbol=normalise_symbol(fields.symbol),
        side="LONG" if side == "LONG" else "SHORT",
        entries=() if entry == "market" else (_number(entry),),
        entry_type=EntryType.MARKET if entry == "market" else EntryType.LIMIT,
        stop_loss=stop, stop_loss_pct=stop_pct,
        take_profits=tuple(TakeProfit(_number(t)) for t in targets),
        leverage=fields.leverage, size_pct=size_pct,
    )


def normalise_symbol(symbol: str) -> str:
    """``BINANCE:BTCUSDT.P``, ``BTCUSDT.P``, ``BTC/USDT``, ``BTCUSDTPERP`` → ``BTCUSDT``."""
    name = symbol.strip().upper().rsplit(":", 1)[-1]
    name = name.removesuffix(".P").removesuffix(".PERP").removesuffix("PERP")
    return "".join(c for c in name if c.isalnum())


def _price_or_percent(value: str) -> tuple[Decimal | None, Decimal | None]:
    text = value.strip()
    if text.endswith("%"):
        return None, _number(text[:-1])
    return _number(text), None


def _number(text: str) -> Decimal:
    number = Decimal(text.strip())
    if not number.is_finite() or number <= 0:
        raise ValueError(f"{text!r} is not a positive number")
    return number


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except UNREADABLE_JSON:
        return None
    return value if isinstance(value, dict) else None


def _timestamp_ms(value: Any, problems: list[str]) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is not None and math.isfinite(number):
        return int(number * 1000) if number < 1e11 else int(number)
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        problems.append(f"timestamp {value!r} is not ISO 8601 or epoch time")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _positive_float(value: Any, name: str, problems: list[str]) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not (math.isfinite(number) and number > 0):
        problems.append(f"{name} {value!r} is not a positive number of seconds")
        return None
    return number
