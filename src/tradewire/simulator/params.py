"""Request parameters (strings off the wire) to typed order requests, with the exchange's errors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tradewire.simulator import errors as err
from tradewire.simulator import rejects

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
ALGO_TYPES = CONDITIONAL_TYPES
CLOSE_POSITION_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
POSITION_SIDES = frozenset({"BOTH", "LONG", "SHORT"})
CALLBACK_RATE_RANGE = (Decimal("0.1"), Decimal("10"))
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})
WORKING_TYPES = frozenset({"MARK_PRICE", "CONTRACT_PRICE"})

Params = Mapping[str, str]


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: str
    type: str  # LIMIT or MARKET
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str = "GTC"
    reduce_only: bool = False
    client_order_id: str | None = None
    resp_type: str = "ACK"
    self_trade_prevention: str = "EXPIRE_MAKER"
    position_side: str = "BOTH"


@dataclass(frozen=True)
class AlgoRequest:
    symbol: str
    side: str
    type: str  # STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT, TRAILING_STOP_MARKET
    trigger_price: Decimal | None = None  # None only for TRAILING_STOP_MARKET
    quantity: Decimal | None = None
    price: Decimal | None = None
    reduce_only: bool = False
    close_position: bool = False
    client_algo_id: str | None = None
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    time_in_force: str = "GTC"
    self_trade_prevention: str = "EXPIRE_MAKER"
    position_side: str = "BOTH"
    activate_price: Decimal | None = None  # TRAILING_STOP_MARKET only
    callback_rate: Decimal | None = None  # TRAILING_STOP_MARKET only (percent)


def required(params: Params, name: str) -> str:
    value = params.get(name, "")
    if value == "":
        raise err.missing(name)
    return value


def decimal(params: Params, name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise err.illegal(name) from None
    if not value.is_finite():
        raise err.illegal(name)
    return value


def required_decimal(params: Params, name: str) -> Decimal:
    value = decimal(params, name)
    if value is None:
        raise err.missing(name)
    return value


def boolean(params: Params, name: str) -> bool:
    raw = params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise err.invalid_enum(name)
    return raw == "true"


def integer(params: Params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"-?\d{1,19}", raw):
        raise err.illegal(name)
    return int(raw)


def one_of(params: Params, name: str, allowed: frozenset[str], default: str | None = None) -> str:
    value = params.get(name) or default
    if value is None:
        raise err.missing(name)
    if value not in allowed:
        raise err.invalid_enum(name)
    return value


def client_id(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not CLIENT_ID_RE.match(value):
        raise err.reject(err.CLIENT_ID_INVALID)
    return value


def position_side(params: Params) -> str:
    """BOTH (default), LONG or SHORT; whether it fits the account's mode is the engine's call."""
    value = params.get("positionSide") or "BOTH"
    if value not in POSITION_SIDES:
        raise err.reject(rejects.INVALID_POSITION_SIDE)
    return value


def parse_order(params: Params) -> OrderRequest:
    """``POST /fapi/v1/order``: LIMIT or MARKET only; conditional types go to the Algo API."""
    symbol = required(params, "symbol")
    side = one_of(params, "side", frozenset({"BUY", "SELL"}))
    order_type = required(params, "type")
    if order_type in CONDITIONAL_TYPES:
        raise err.reject(err.USE_ALGO_API)
    if order_type not in ("LIMIT", "MARKET"):
        raise err.invalid_enum("type")
    quantity = required_decimal(params, "quantity")
    price = decimal(params, "price")
    if order_type == "LIMIT":
        if price is None:
            raise err.missing("price")
        tif = one_of(params, "timeInForce", TIME_IN_FORCE)
    else:
        if price is not None:
            raise err.not_required("price")
        tif = "GTC"
    return OrderRequest(
        symbol=symbol, side=side, type=order_type, quantity=quantity, price=price,
        time_in_force=tif, reduce_only=boolean(params, "reduceOnly"),
        client_order_id=client_id(params, "newClientOrderId"),
        resp_type=one_of(params, "newOrderRespType", frozenset({"ACK", "RESULT"}), "ACK"),
        self_trade_prevention=params.get("selfTradePreventionMode", "EXPIRE_MAKER"),
        position_side=position_side(params),
    )


def parse_algo(params: Params) -> AlgoRequest:
    """``POST /fapi/v1/algoOrder`` with ``algoType=CONDITIONAL``."""
    if required(params, "algoType") != "CONDITIONAL":
        raise err.invalid_enum("algoType")
    symbol = required(params, "symbol")
    side = one_of(params, "side", frozenset({"BUY", "SELL"}))
    order_type = required(params, "type")
    if order_type not in ALGO_TYPES:
        raise err.invalid_enum("type")
    close_position = boolean(params, "closePosition")
    reduce_only = boolean(params, "reduceOnly")
    quantity = decimal(params, "quantity")
    if close_position and order_type not in CLOSE_POSITION_TYPES:
        raise err.not_required("closePosition")
    if close_position and quantity is not None:
        raise err.reject(err.QTY_WITH_CLOSE_POSITION)
    if close_position and reduce_only:
        raise err.not_required("reduceOnly")
    if not close_position and quantity is None:
        raise err.missing("quantity")
    price = decimal(params, "price")
    if not order_type.endswith("_MARKET") and price is None:
        raise err.missing("price")
    trailing = _trailing(params) if order_type == "TRAILING_STOP_MARKET" else None
    return AlgoRequest(
        symbol=symbol, side=side, type=order_type,
        trigger_price=None if trailing else required_decimal(params, "triggerPrice"),
        activate_price=trailing[0] if trailing else None,
        callback_rate=trailing[1] if trailing else None,
        position_side=position_side(params),
        quantity=quantity, price=price, reduce_only=reduce_only, close_position=close_position,
        client_algo_id=client_id(params, "clientAlgoId"),
        working_type=one_of(params, "workingType", WORKING_TYPES, "CONTRACT_PRICE"),
        price_protect=boolean(params, "priceProtect"),
        time_in_force=one_of(params, "timeInForce", TIME_IN_FORCE, "GTC"),
        self_trade_prevention=params.get("selfTradePreventionMode", "EXPIRE_MAKER"),
    )


def _trailing(params: Params) -> tuple[Decimal | None, Decimal]:
    """(activatePrice, callbackRate) of a TRAILING_STOP_MARKET; it takes no triggerPrice
    (-2021, as the exchange answers) and a callbackRate of 0.1-10 (percent)."""
    if params.get("triggerPrice"):
        raise err.reject(err.WOULD_TRIGGER)
    rate = required_decimal(params, "callbackRate")
    low, high = CALLBACK_RATE_RANGE
    if not low <= rate <= high:
        raise err.invalid_enum("callbackRate")
    return decimal(params, "activatePrice"), rate


def parse_batch(params: Params) -> list[OrderRequest | err.SimError]:
    """``POST /fapi/v1/batchOrders``: ``batchOrders`` is a JSON list of order objects (values
    as strings); each item parsed like ``POST /fapi/v1/order`` — a bad item becomes its error,
    answered in its place. More than 5 (or none) is the engine's -4082."""
    raw = required(params, "batchOrders")
    try:
        items = json.loads(raw)
    except ValueError:
        raise err.invalid_enum("batchOrders") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise err.invalid_enum("batchOrders")
    parsed: list[OrderRequest | err.SimError] = []
    for item in items:
        try:
            parsed.append(parse_order({str(k): _text(v) for k, v in item.items()}))
        except err.SimError as exc:
            parsed.append(exc)
    return parsed


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
