"""Raw exchange event (in its bus envelope) → ``DomainEvent``. Pure.

Our orders are recognised by their client ids (``domain.client_order_id``): the entry by its
own id, a triggered stop-loss or take-profit by the ``c`` of its engine order, which the
exchange sets to the algo order's ``clientAlgoId``.
"""

from __future__ import annotations

from tradewire.bus.base import Envelope
from tradewire.domain import EXIT_LEGS, DomainEvent, EventKind, Leg, leg_of_client_id
from tradewire.errors import PermanentError
from tradewire.exchange.wire import (
    AccountUpdate,
    AlgoUpdate,
    OrderTradeUpdate,
    UnknownEvent,
    parse_event,
)

_EXIT_FILLED = {leg: EventKind.TP_TRIGGERED if leg.is_take_profit else EventKind.SL_TRIGGERED
                for leg in EXIT_LEGS}
_EXIT_CANCELED = {leg: EventKind.TP_CANCELED if leg.is_take_profit else EventKind.SL_CANCELED
                  for leg in EXIT_LEGS}
_ENTRY_BY_STATUS = {
    "FILLED": EventKind.ENTRY_FILLED,
    "PARTIALLY_FILLED": EventKind.ENTRY_PARTIALLY_FILLED,
    "CANCELED": EventKind.ENTRY_CANCELED,
    "EXPIRED": EventKind.ENTRY_CANCELED,
    "EXPIRED_IN_MATCH": EventKind.ENTRY_CANCELED,
}
LIQUIDATION_PREFIX = "autoclose-"


def normalize(envelope: Envelope) -> DomainEvent:
    """What the event means; ``PermanentError`` when it cannot be understood at all."""
    if envelope.event.get("e") == "MALFORMED":
        reason = envelope.event.get("reason", "unreadable frame")
        raise PermanentError(f"malformed exchange message: {reason}")
    wire = parse_event(envelope.event)
    if isinstance(wire, OrderTradeUpdate):
        return _order_update(envelope, wire)
    if isinstance(wire, AlgoUpdate):
        return _algo_update(envelope, wire)
    kind = EventKind.ACCOUNT_UPDATED if isinstance(wire, AccountUpdate) else EventKind.IGNORED
    raw_type = wire.e if isinstance(wire, UnknownEvent) else type(wire).__name__
    return _base(envelope, kind, raw_type=raw_type)


def _base(envelope: Envelope, kind: EventKind, **fields: object) -> DomainEvent:
    return DomainEvent(
        kind=kind,
        event_id=envelope.event_id,
        account_id=envelope.account_id,
        symbol=envelope.symbol or None,
        **fields,  # type: ignore[arg-type]
    )


def _order_update(envelope: Envelope, wire: OrderTradeUpdate) -> DomainEvent:
    o = wire.o
    common = {
        "client_id": o.c,
        "order_id": o.i,
        "price": o.ap if o.ap else None,
        "quantity": o.z,
        "realized_pnl": o.rp if o.x == "TRADE" else None,
        "commission": o.n if o.x == "TRADE" else None,
        "event_time_ms": wire.E,
        "raw_type": OrderTradeUpdate.EVENT,
        "reason": f"{o.x}/{o.X}",
    }
    leg = leg_of_client_id(o.c)
    if o.c.startswith(LIQUIDATION_PREFIX) and o.X == "FILLED":
        return _base(envelope, EventKind.LIQUIDATED, **common)
    if leg is Leg.ENTRY:
        return _base(envelope, _ENTRY_BY_STATUS.get(o.X, EventKind.IGNORED), **common)
    if leg in _EXIT_FILLED and o.X == "FILLED":
        return _base(envelope, _EXIT_FILLED[leg], **common)
    return _base(envelope, EventKind.IGNORED, **common)


def _algo_update(envelope: Envelope, wire: AlgoUpdate) -> DomainEvent:
    o = wire.o
    leg = leg_of_client_id(o.caid)
    kind = EventKind.IGNORED
    if leg in _EXIT_CANCELED and o.X in ("CANCELED", "EXPIRED"):
        kind = _EXIT_CANCELED[leg]
    elif leg is not None and o.X == "REJECTED":
        kind = EventKind.ORDER_REJECTED
    return _base(
        envelope,
        kind,
        client_id=o.caid,
        order_id=o.aid,
        reason=o.rm or o.X,
        event_time_ms=wire.E,
        raw_type=AlgoUpdate.EVENT,
    )
