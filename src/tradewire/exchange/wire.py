"""Wire structs of the user data stream, keyed exactly as the exchange's JSON (reference §4).

Each struct mirrors one JSON object field for field (``o.X`` is ``OrderUpdate.X``), amounts are
``Decimal`` parsed from the strings, unknown extra fields are ignored, and ``from_json`` raises
``PermanentError`` naming the offending field when a payload is malformed. ``parse_event``
dispatches a payload on its ``e``; an event type we do not model becomes ``UnknownEvent``.

The REST response structs live in ``wire_rest`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Self

from tradewire.errors import PermanentError
from tradewire.exchange.fields import (
    Fields,
    NotPlain,
    plain_decimal,
    plain_flag,
    plain_int,
    plain_text,
)
from tradewire.exchange.wire_rest import (
    AlgoCancelResponse,
    AlgoOrderResponse,
    ApiError,
    Balance,
    ExchangeInfo,
    LeverageResponse,
    LotSizeFilter,
    MinNotionalFilter,
    OrderResponse,
    PositionRisk,
    PriceFilter,
    SymbolInfo,
)

__all__ = [
    "AccountUpdate", "AccountUpdateData", "AlgoCancelResponse", "AlgoOrderResponse",
    "AlgoOrderUpdate", "AlgoUpdate", "ApiError", "Balance", "BalanceUpdate", "ExchangeInfo",
    "LeverageResponse", "ListenKeyExpired", "LotSizeFilter", "MinNotionalFilter", "OrderResponse",
    "OrderTradeUpdate", "OrderUpdate", "PositionRisk", "PositionUpdate", "PriceFilter",
    "SymbolInfo", "TradeLite", "UnknownEvent", "WireEvent", "event_type", "parse_event",
]


@dataclass(frozen=True)
class OrderUpdate:
    """``ORDER_TRADE_UPDATE.o``: one matching-engine order after one execution (reference §4.1)."""

    s: str  # symbol
    c: str  # client order id (clientAlgoId on a triggered algo order)
    S: str  # side
    o: str  # order type now (MARKET after a stop triggered)
    f: str  # time in force
    q: Decimal  # original quantity
    p: Decimal  # original price
    ap: Decimal  # average fill price
    sp: Decimal  # stop price
    x: str  # execution type: what caused this push
    X: str  # order status after it
    i: int  # order id
    l: Decimal  # last filled quantity  # noqa: E741
    z: Decimal  # cumulative filled quantity
    L: Decimal  # last filled price
    N: str  # commission asset ("" when none)
    n: Decimal  # commission (0 when none)
    T: int  # order trade time
    t: int  # trade id (0 when not a trade)
    m: bool  # maker
    R: bool  # reduce-only
    wt: str  # working type
    ot: str  # original order type
    ps: str  # position side
    cp: bool  # close-all conditional order
    rp: Decimal  # realized profit of this trade
    er: str  # expiry reason ("0" none)

    @classmethod
    def from_json(cls, data: object, where: str = "ORDER_TRADE_UPDATE.o") -> Self:
        if type(data) is dict:  # every worker event: the same fields, read without ``Fields``
            try:
                return cls._plain(data)
            except NotPlain:
                pass  # something unusual: ``Fields`` reads it, or names what is wrong
        r = Fields(data, where)
        return cls(
            s=r.text("s"), c=r.text("c"), S=r.text("S"), o=r.text("o"), f=r.opt_text("f"),
            q=r.decimal("q"), p=r.decimal_or_zero("p"), ap=r.decimal_or_zero("ap"),
            sp=r.decimal_or_zero("sp"), x=r.text("x"), X=r.text("X"), i=r.integer("i"),
            l=r.decimal("l"), z=r.decimal("z"), L=r.decimal_or_zero("L"), N=r.opt_text("N"),
            n=r.decimal_or_zero("n"), T=r.opt_integer("T"), t=r.opt_integer("t"),
            m=r.opt_flag("m"), R=r.opt_flag("R"), wt=r.opt_text("wt"), ot=r.opt_text("ot"),
            ps=r.opt_text("ps", "BOTH"), cp=r.opt_flag("cp"), rp=r.decimal_or_zero("rp"),
            er=str(r.data.get("er") or "0"),
        )

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> Self:
        """What ``from_json`` reads, field for field the same, when every value has its usual
        JSON type (strings, decimal strings, ints, bools; optional ones absent or null);
        ``NotPlain`` otherwise. A third of the cost of ``Fields`` per event."""
        g = d.get
        return cls(
            s=plain_text(g("s")), c=plain_text(g("c")), S=plain_text(g("S")),
            o=plain_text(g("o")), f=plain_text(g("f"), ""), q=plain_decimal(g("q")),
            p=plain_decimal(g("p"), True), ap=plain_decimal(g("ap"), True),
            sp=plain_decimal(g("sp"), True), x=plain_text(g("x")), X=plain_text(g("X")),
            i=plain_int(g("i")), l=plain_decimal(g("l")), z=plain_decimal(g("z")),
            L=plain_decimal(g("L"), True), N=plain_text(g("N"), ""),
            n=plain_decimal(g("n"), True), T=plain_int(g("T"), True),
            t=plain_int(g("t"), True), m=plain_flag(g("m")), R=plain_flag(g("R")),
            wt=plain_text(g("wt"), ""), ot=plain_text(g("ot"), ""),
            ps=plain_text(g("ps"), "BOTH"), cp=plain_flag(g("cp")),
            rp=plain_decimal(g("rp"), True), er=str(g("er") or "0"),
        )


@dataclass(frozen=True)
class OrderTradeUpdate:
    EVENT: ClassVar[str] = "ORDER_TRADE_UPDATE"
    E: int  # event time
    T: int  # transaction time
    o: OrderUpdate

    @classmethod
    def from_json(cls, data: object) -> Self:
        if type(data) is dict and type(data.get("o")) is dict:
            try:
                return cls(E=plain_int(data.get("E")), T=plain_int(data.get("T"), True),
                           o=OrderUpdate.from_json(data["o"]))
            except NotPlain:
                pass
        r = Fields(data, cls.EVENT)
        order = OrderUpdate.from_json(r.obj("o").data)
        return cls(E=r.integer("E"), T=r.opt_integer("T"), o=order)


@dataclass(frozen=True)
class AlgoOrderUpdate:
    """``ALGO_UPDATE.o``: one conditional order in the Algo Service (reference §4.2)."""

    caid: str  # client algo id
    aid: int  # algo id
    at: str  # algo type (CONDITIONAL)
    o: str  # order type
    s: str
    S: str
    ps: str
    f: str
    q: Decimal  # quantity ("0" with closePosition)
    X: str  # algo status
    ai: str  # matching-engine order id once triggered, "" before
    ap: Decimal  # average fill price
    aq: Decimal  # executed quantity
    act: str  # actual order type in the engine ("0" before trigger)
    tp: Decimal  # trigger price
    p: Decimal  # order price
    wt: str
    cp: bool  # close position
    pP: bool  # price protect
    R: bool  # reduce-only
    tt: int  # trigger time
    rm: str  # failure reason

    @property
    def actual_order_id(self) -> int | None:
        """The triggered order's id in the matching engine, None before the trigger."""
        return int(self.ai) if self.ai.isdigit() else None

    @classmethod
    def from_json(cls, data: object, where: str = "ALGO_UPDATE.o") -> Self:
        r = Fields(data, where)
        return cls(
            caid=r.text("caid"), aid=r.integer("aid"), at=r.opt_text("at", "CONDITIONAL"),
            o=r.text("o"), s=r.text("s"), S=r.text("S"), ps=r.opt_text("ps", "BOTH"),
            f=r.opt_text("f"), q=r.decimal_or_zero("q"), X=r.text("X"),
            ai=str(r.data.get("ai") or ""), act=str(r.data.get("act") or "0"),
            ap=r.decimal_or_zero("ap"), aq=r.decimal_or_zero("aq"),
            tp=r.decimal_or_zero("tp"), p=r.decimal_or_zero("p"), wt=r.opt_text("wt"),
            cp=r.opt_flag("cp"), pP=r.opt_flag("pP"), R=r.opt_flag("R"), tt=r.opt_integer("tt"),
            rm=r.opt_text("rm"),
        )


@dataclass(frozen=True)
class AlgoUpdate:
    EVENT: ClassVar[str] = "ALGO_UPDATE"
    E: int
    T: int
    o: AlgoOrderUpdate

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, cls.EVENT)
        order = AlgoOrderUpdate.from_json(r.obj("o").data)
        return cls(E=r.integer("E"), T=r.opt_integer("T"), o=order)


@dataclass(frozen=True)
class BalanceUpdate:
    """``ACCOUNT_UPDATE.a.B[]``."""

    a: str  # asset
    wb: Decimal  # wallet balance
    cw: Decimal  # cross wallet balance
    bc: Decimal  # balance change except PnL and commission

    @classmethod
    def read(cls, r: Fields) -> Self:
        return cls(
            a=r.text("a"), wb=r.decimal("wb"), cw=r.decimal_or_zero("cw"),
            bc=r.decimal_or_zero("bc"),
        )


@dataclass(frozen=True)
class PositionUpdate:
    """``ACCOUNT_UPDATE.a.P[]``: only changed positions (a delta); key by ``(s, ps)``."""

    s: str
    pa: Decimal  # position amount, signed
    ep: Decimal  # entry price
    bep: Decimal  # breakeven price
    cr: Decimal  # accumulated realized (pre-fee)
    up: Decimal  # unrealized PnL
    mt: str  # margin type (lowercase: isolated / cross)
    iw: Decimal  # isolated wallet
    ps: str  # position side

    @classmethod
    def read(cls, r: Fields) -> Self:
        return cls(
            s=r.text("s"), pa=r.decimal("pa"), ep=r.decimal_or_zero("ep"),
            bep=r.decimal_or_zero("bep"), cr=r.decimal_or_zero("cr"), up=r.decimal_or_zero("up"),
            mt=r.opt_text("mt"), iw=r.decimal_or_zero("iw"), ps=r.opt_text("ps", "BOTH"),
        )


@dataclass(frozen=True)
class AccountUpdateData:
    """``ACCOUNT_UPDATE.a``."""

    m: str  # reason: ORDER, FUNDING_FEE, DEPOSIT, ...
    B: tuple[BalanceUpdate, ...]
    P: tuple[PositionUpdate, ...]
    S: str = ""  # symbol, on FUNDING_FEE only


@dataclass(frozen=True)
class AccountUpdate:
    EVENT: ClassVar[str] = "ACCOUNT_UPDATE"
    E: int
    T: int
    a: AccountUpdateData

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, cls.EVENT)
        a = r.obj("a")
        body = AccountUpdateData(
            m=a.text("m"),
            B=tuple(BalanceUpdate.read(b) for b in a.objects("B", required=False)),
            P=tuple(PositionUpdate.read(p) for p in a.objects("P", required=False)),
            S=a.opt_text("S"),
        )
        return cls(E=r.integer("E"), T=r.opt_integer("T"), a=body)


@dataclass(frozen=True)
class TradeLite:
    """``TRADE_LITE``: a fill, early and without status; de-duplicate by ``(s, t)`` (§4.6)."""

    EVENT: ClassVar[str] = "TRADE_LITE"
    E: int
    T: int
    s: str
    q: Decimal  # original quantity
    p: Decimal  # original price
    m: bool  # maker
    c: str  # client order id
    S: str  # side
    L: Decimal  # last filled price
    l: Decimal  # last filled quantity  # noqa: E741
    t: int  # trade id
    i: int  # order id

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, cls.EVENT)
        return cls(
            E=r.integer("E"), T=r.opt_integer("T"), s=r.text("s"), q=r.decimal_or_zero("q"),
            p=r.decimal_or_zero("p"), m=r.opt_flag("m"), c=r.text("c"), S=r.text("S"),
            L=r.decimal("L"), l=r.decimal("l"), t=r.integer("t"), i=r.integer("i"),
        )


@dataclass(frozen=True)
class ListenKeyExpired:
    """``listenKeyExpired``: the socket stays open but this key's events stop (§3.4)."""

    EVENT: ClassVar[str] = "listenKeyExpired"
    E: int
    listenKey: str  # "" in older payloads that did not carry it

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, cls.EVENT)
        return cls(E=r.integer("E"), listenKey=r.opt_text("listenKey"))


@dataclass(frozen=True)
class UnknownEvent:
    """An event type this service does not model (MARGIN_CALL, ACCOUNT_CONFIG_UPDATE, ...)."""

    e: str
    raw: Mapping[str, Any] = field(hash=False)


WireEvent = (
    OrderTradeUpdate | AlgoUpdate | AccountUpdate | TradeLite | ListenKeyExpired | UnknownEvent
)

_PARSERS: dict[str, Callable[[object], WireEvent]] = {
    OrderTradeUpdate.EVENT: OrderTradeUpdate.from_json,
    AlgoUpdate.EVENT: AlgoUpdate.from_json,
    AccountUpdate.EVENT: AccountUpdate.from_json,
    TradeLite.EVENT: TradeLite.from_json,
    ListenKeyExpired.EVENT: ListenKeyExpired.from_json,
}


def event_type(payload: object) -> str:
    """The ``e`` of a user-stream payload; ``PermanentError`` when it is not an event at all."""
    if not isinstance(payload, Mapping):
        got = type(payload).__name__
        raise PermanentError(f"user-stream event: expected a JSON object, got {got}")
    kind = payload.get("e")
    if not isinstance(kind, str) or not kind:
        raise PermanentError(f"user-stream event: missing or invalid event type 'e' ({kind!r})")
    return kind


def parse_event(payload: object) -> WireEvent:
    """Parse one user-stream payload (already unwrapped from ``{"stream","data"}``)."""
    kind = event_type(payload)
    parser = _PARSERS.get(kind)
    if parser is None:
        assert isinstance(payload, Mapping)
        return UnknownEvent(e=kind, raw=dict(payload))
    return parser(payload)
