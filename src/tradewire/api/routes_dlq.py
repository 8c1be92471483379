"""Operators' endpoints for the dead-letter queue and the bus (bearer token required).

``GET /api/dlq`` (filters) · ``GET /api/dlq/{id}`` · ``POST /api/dlq/replay`` ·
``POST /api/dlq/purge`` · ``GET /api/bus`` · ``POST /api/bus/pause`` · ``POST /api/bus/resume``.
Replay and purge take ``ids`` or filters (or ``all: true``) and ``dry_run``; see
``tradewire.bus.dlq`` for what they do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from tradewire.api.deps import ApiDeps, deps, require_operator
from tradewire.bus import dlq
from tradewire.bus.base import Bus
from tradewire.clock import SystemClock
from tradewire.errors import Conflict, NotFound

router = APIRouter(prefix="/api", dependencies=[Depends(require_operator)])

Deps = Annotated[ApiDeps, Depends(deps)]
_clock = SystemClock()


class DlqAction(BaseModel):
    """Body of replay/purge: ``ids``, or filters, or ``all``."""

    ids: list[str] | None = None
    user_id: int | None = None
    symbol: str | None = None
    error: str | None = None
    older_than: str | None = Field(default=None, description="age such as 30s, 15m, 1h, 2d")
    all: bool = False
    dry_run: bool = False
    force: bool = False  # replay: republish bodies that are not valid envelopes, raw

    def to_filter(self) -> dlq.DlqFilter:
        return _filter(self.user_id, self.symbol, self.error, self.older_than)


def _filter(
    user_id: int | None, symbol: str | None, error: str | None, older_than: str | None
) -> dlq.DlqFilter:
    age = dlq.parse_age(older_than) if older_than else None
    return dlq.DlqFilter(user_id=user_id, symbol=symbol or None, error=error or None,
                         older_than_ms=age)


def _bus(d: ApiDeps) -> Bus:
    if d.bus is None:
        raise Conflict("this API has no bus attached")
    return d.bus


@router.get("/dlq")
async def dead_letters(
    d: Deps, user_id: int | None = None, symbol: str | None = None, error: str | None = None,
    older_than: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The DLQ's size and its entries matching the filters (oldest first)."""
    if d.bus is None:
        return {"size": None, "entries": []}
    now = _clock.now_ms()
    letters = await dlq.select(d.bus, _filter(user_id, symbol, error, older_than), now,
                               limit=limit)
    return {"size": await d.bus.dlq_size(), "entries": [dlq.describe(x, now) for x in letters]}


@router.get("/dlq/{dlq_id}")
async def dead_letter(dlq_id: str, d: Deps) -> dict[str, Any]:
    letter = await _bus(d).dlq_get(dlq_id)
    if letter is None:
        raise NotFound(f"no DLQ entry {dlq_id!r}")
    return dlq.describe(letter, _clock.now_ms())


async def _targets(bus: Bus, body: DlqAction) -> list[Any]:
    flt = body.to_filter()
    dlq.require_target(body.ids, flt, body.all)
    return await dlq.select(bus, flt, _clock.now_ms(), ids=body.ids)


@router.post("/dlq/replay")
async def replay(body: DlqAction, d: Deps) -> dict[str, Any]:
    bus = _bus(d)
    outcomes = await dlq.replay(bus, await _targets(bus, body), dry_run=body.dry_run,
                                force=body.force)
    return {"dry_run": body.dry_run, "entries": [o.as_dict() for o in outcomes],
            "dlq_size": await bus.dlq_size()}


@router.post("/dlq/purge")
async def purge(body: DlqAction, d: Deps) -> dict[str, Any]:
    bus = _bus(d)
    outcomes = await dlq.purge(bus, await _targets(bus, body), dry_run=body.dry_run)
    return {"dry_run": body.dry_run, "entries": [o.as_dict() for o in outcomes],
            "dlq_size": await bus.dlq_size()}


async def bus_status(bus: Bus) -> dict[str, Any]:
    return {"paused": await bus.is_paused(), "pending": await bus.pending(),
            "dlq_size": await bus.dlq_size()}


@router.get("/bus")
async def get_bus(d: Deps) -> dict[str, Any]:
    return await bus_status(_bus(d))


@router.post("/bus/pause")
async def pause(d: Deps) -> dict[str, Any]:
    await _bus(d).set_paused(True)
    return await bus_status(_bus(d))


@router.post("/bus/resume")
async def resume(d: Deps) -> dict[str, Any]:
    await _bus(d).set_paused(False)
    return await bus_status(_bus(d))
