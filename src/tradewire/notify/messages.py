"""Discord webhook bodies (embeds) for what users and operators are told. Pure functions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradewire.processor.state import Notice

GREEN = 0x2ECC71
RED = 0xE74C3C
ORANGE = 0xE67E22
BLUE = 0x3498DB

_TITLES: dict[Notice, tuple[str, int]] = {
    Notice.ENTRY_FILLED: ("Entry filled", BLUE),
    Notice.ENTRY_CANCELED: ("Entry cancelled", ORANGE),
    Notice.STOP_LOSS_HIT: ("Stop-loss hit", RED),
    Notice.TAKE_PROFIT_HIT: ("Take-profit hit", GREEN),
    Notice.LIQUIDATED: ("Position liquidated", RED),
    Notice.PROTECTION_LOST: ("Protective order cancelled: position unprotected", ORANGE),
    Notice.ORDER_REJECTED: ("Order rejected", ORANGE),
}


def _fmt(value: object) -> str:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text if text != "-0" else "0"
    return str(value)


def trade_embed(notice: Notice, fields: dict[str, Any]) -> dict[str, Any]:
    """A webhook body describing one trade event; ``fields`` values None are left out."""
    title, color = _TITLES[notice]
    symbol = fields.get("symbol", "")
    shown = [
        {"name": name, "value": _fmt(value), "inline": True}
        for name, value in fields.items()
        if value is not None and name != "symbol"
    ]
    return {
        "username": "tradewire",
        "embeds": [{"title": f"{title} · {symbol}".strip(" ·"), "color": color, "fields": shown}],
        "tradewire": {"notice": notice.value},
    }


def alert_embed(title: str, description: str, *, red: bool = True) -> dict[str, Any]:
    """An operators' alert (DLQ backlog, stream blind, ...)."""
    return {
        "username": "tradewire",
        "embeds": [{"title": title, "description": description, "color": RED if red else ORANGE}],
        "tradewire": {"notice": "ALERT"},
    }


def public_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The body actually sent: our own bookkeeping key stripped."""
    return {k: v for k, v in payload.items() if k != "tradewire"}
