"""Stable ids for exchange events, derived from the exchange's own ids.

The same event delivered twice, seen on two overlapping sockets, or re-synthesised by REST
reconciliation gets the same id; two different events never share one. Quantities are
canonicalised (``"0.010"`` and ``"0.01"`` are the same amount), so a synthesised payload need not
copy the exchange's string formatting. Every id starts with the account id, because the payloads
themselves carry none.

::

    ORDER_TRADE_UPDATE  <acct>:otu:<s>:<i>:<x>:<X>:<t>:<z>     (+ :<q>:<p> on AMENDMENT)
    ALGO_UPDATE         <acct>:algo:<s>:<aid>:<X>
    TRADE_LITE          <acct>:tl:<s>:<t>
    ACCOUNT_UPDATE      <acct>:acct:<T>:<m>:<sha256(a)[:16]>
    listenKeyExpired    <acct>:lke:<listenKey>:<E>
    anything else       <acct>:raw:<sha256(payload)>
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeGuard

import orjson

from tradewire.exchange.fields import Fields
from tradewire.exchange.wire import event_type

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)
"""``json.dumps`` with these options builds a new encoder per call; this one is reused (the same
text: ``canonical_json`` feeds event ids, which must never change)."""


def canonical_json(value: object) -> str:
    """Key-sorted, whitespace-free JSON: equal content gives equal text."""
    return _CANONICAL.encode(value)


def _digest(value: object) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _text_rows(body: dict[str, Any]) -> bool:
    """Every value of ``body`` is a string or a list of objects whose values are all strings
    (the usual ACCOUNT_UPDATE ``a``: ``{"m": ..., "B": [{...}], "P": [{...}]}``)."""
    for value in body.values():
        if type(value) is list:
            for row in value:
                if type(row) is not dict:
                    return False
                for text in row.values():
                    if type(text) is not str:
                        return False
        elif type(value) is not str:
            return False
    return True


def _body_digest(body: dict[str, Any]) -> str:
    """``_digest(body)``, ten times faster for a body of strings (``_text_rows``): orjson with
    sorted keys writes the same bytes as ``canonical_json`` for strings, objects and lists (but
    not for every float, NaN, big int, non-JSON type: those take ``_digest``)."""
    if _text_rows(body):
        try:
            return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        except orjson.JSONEncodeError:  # a lone surrogate, a key that is not a string
            pass
    return _digest(body)


def _amount(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _order_trade_update(payload: Mapping[str, Any]) -> str:
    o = Fields(payload, "ORDER_TRADE_UPDATE").obj("o")
    execution = o.text("x")
    parts = [
        "otu", o.text("s"), str(o.integer("i")), execution, o.text("X"),
        str(o.opt_integer("t")), _amount(o.decimal("z")),
    ]
    if execution == "AMENDMENT":  # several amendments share x/X/t/z; what changed tells them apart
        parts += [_amount(o.decimal("q")), _amount(o.decimal_or_zero("p"))]
    return ":".join(parts)


def _algo_update(payload: Mapping[str, Any]) -> str:
    o = Fields(payload, "ALGO_UPDATE").obj("o")
    return f"algo:{o.text('s')}:{o.integer('aid')}:{o.text('X')}"


def _trade_lite(payload: Mapping[str, Any]) -> str:
    r = Fields(payload, "TRADE_LITE")
    return f"tl:{r.text('s')}:{r.integer('t')}"


def _account_update(payload: Mapping[str, Any]) -> str:
    body_ = payload.get("a")
    when_ = payload.get("T")
    if type(body_) is dict and type(when_) is int and when_ and type(body_.get("m")) is str:
        # the usual shape, checked as ``Fields`` would (same text, a third of the time)
        return f"acct:{when_}:{body_['m']}:{_body_digest(body_)[:16]}"
    r = Fields(payload, "ACCOUNT_UPDATE")
    body = r.obj("a")
    when = r.opt_integer("T") or r.integer("E")
    return f"acct:{when}:{body.text('m')}:{_digest(body.data)[:16]}"


def _listen_key_expired(payload: Mapping[str, Any]) -> str:
    r = Fields(payload, "listenKeyExpired")
    return f"lke:{r.opt_text('listenKey')}:{r.integer('E')}"


def _raw(payload: Mapping[str, Any]) -> str:
    return f"raw:{_digest(payload)}"


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ORDER_TRADE_UPDATE": _order_trade_update,
    "ALGO_UPDATE": _algo_update,
    "TRADE_LITE": _trade_lite,
    "ACCOUNT_UPDATE": _account_update,
    "listenKeyExpired": _listen_key_expired,
}


def event_id(account_id: int, payload: object) -> str:
    """The stable id of one user-stream event of one account.

    Raises ``PermanentError`` when the payload is not an event or lacks the ids its type needs.
    """
    if type(payload) is dict and type(kind := payload.get("e")) is str and kind:
        return f"{account_id}:{_BUILDERS.get(kind, _raw)(payload)}"  # ``event_type``, inlined
    builder = _BUILDERS.get(event_type(payload), _raw)
    assert isinstance(payload, Mapping)
    return f"{account_id}:{builder(payload)}"


def _is_map(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with the JSON case (a dict) first: the ABC check costs
    more than anything else here, and this runs for every event."""
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def event_symbol(payload: object) -> str:
    """The symbol an event concerns, or ``""`` when none (or several) can be named. Never raises."""
    if not _is_map(payload):
        return ""
    order = payload.get("o")
    if _is_map(order):
        return _text(order.get("s"))
    if "s" in payload:
        return _text(payload.get("s"))
    body = payload.get("a")
    return _account_symbol(body) if _is_map(body) else ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _account_symbol(body: Mapping[str, Any]) -> str:
    """ACCOUNT_UPDATE: the one symbol of its positions, else the funding-fee symbol ``S``."""
    positions = body.get("P")
    if type(positions) is list and len(positions) < 2:  # the usual cases, without the set
        if not positions:
            return _text(body.get("S"))
        if type(row := positions[0]) is dict:
            return _text(row.get("s"))
    rows = positions if isinstance(positions, list) else []
    symbols = {_text(p.get("s")) for p in rows if _is_map(p)}
    if len(symbols) == 1:
        return symbols.pop()
    return _text(body.get("S")) if not symbols else ""
