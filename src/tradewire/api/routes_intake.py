"""Signal intake over HTTP.

Operator endpoints (bearer token): ``POST /api/intake/messages`` (a ``RawMessage``; answers the
verdict), ``GET /api/intake/messages?status=&limit=``, ``POST /api/intake/messages/{id}/confirm``
and ``/reject`` (409 unless the message is pending confirmation).

``POST /api/intake/tradingview`` takes no bearer token (TradingView cannot send one) but a
shared secret in the body or ``?secret=`` (see ``intake/tradingview.py``); 401 when it is wrong.
Every authenticated alert is answered 200 with its verdict — stale and duplicate ones too, so
TradingView does not retry — and within ``TRADEWIRE_TRADINGVIEW_BUDGET_S``: the row is written
first, and a slower execution finishes in the background.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from tradewire.api.deps import ApiDeps, deps, require_operator
from tradewire.errors import InvalidInput, Unauthorized
from tradewire.intake import tradingview
from tradewire.intake.model import RawMessage
from tradewire.intake.service import IntakeService
from tradewire.store.tables import IntakeMessage, IntakeStatus

Deps = Annotated[ApiDeps, Depends(deps)]

_operator = APIRouter(prefix="/api/intake", dependencies=[Depends(require_operator)])
_webhooks = APIRouter(prefix="/api/intake")


def _service(d: ApiDeps) -> IntakeService:
    if d.intake is None:
        raise HTTPException(503, "signal intake is not configured on this server")
    return d.intake


def message_json(row: IntakeMessage) -> dict[str, Any]:
    return {
        "id": row.id, "source": row.source, "channel": row.channel,
        "message_id": row.message_id, "edit": row.edit, "author": row.author,
        "reply_to": row.reply_to, "sent_at_ms": row.sent_at_ms,
        "received_at_ms": row.received_at_ms, "text": row.text, "status": row.status.value,
        "decision": row.decision, "kind": row.kind, "reason": row.reason, "note": row.note,
        "signal_id": row.signal_id, "created_at": row.created_at, "updated_at": row.updated_at,
    }


@_operator.post("/messages")
async def post_message(body: RawMessage, d: Deps) -> dict[str, Any]:
    """Record and decide one message from a source adapter."""
    result = await _service(d).handle(body)
    return result.as_json()


@_operator.get("/messages")
async def list_messages(
    d: Deps,
    status: IntakeStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    rows = await _service(d).list_messages(status, limit)
    return [message_json(row) for row in rows]


@_operator.post("/messages/{intake_id}/confirm")
async def confirm_message(intake_id: int, d: Deps) -> dict[str, Any]:
    """Execute a pending message if it is still fresh and valid."""
    result = await _service(d).confirm(intake_id)
    return result.as_json()


@_operator.post("/messages/{intake_id}/reject")
async def reject_message(intake_id: int, d: Deps) -> dict[str, Any]:
    result = await _service(d).reject(intake_id)
    return result.as_json()


@_webhooks.post("/tradingview")
async def tradingview_alert(
    request: Request, d: Deps, secret: str = "", alert_id: str = ""
) -> dict[str, Any]:
    """A TradingView alert (JSON or text); see the module docstring."""
    service = _service(d)
    body = await request.body()
    if len(body) > tradingview.MAX_BODY_BYTES:
        raise InvalidInput("alert body too large", field="body")
    envelope = tradingview.open_envelope(
        body.decode("utf-8", errors="replace"), query_secret=secret, query_alert_id=alert_id
    )
    if not tradingview.secret_matches(envelope.secret, service.config.tradingview_secret):
        raise Unauthorized("missing or wrong tradingview secret")
    bucket_ms = max(1, int(service.config.dedupe_window_s * 1000))
    alert = tradingview.to_alert(envelope, service.clock.now_ms(), bucket_ms)
    result = await service.handle_within(
        alert.raw, service.config.tradingview_budget_s, parsed=alert.parsed,
        max_lag_s=alert.max_lag_s,
    )
    return result.as_json()


router = APIRouter()
router.include_router(_operator)
router.include_router(_webhooks)
