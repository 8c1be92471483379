"""``POST /api/execute-trade``: a signal fanned out to the subscribed users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from tradewire.api.deps import ApiDeps, deps, require_operator
from tradewire.trading.signals import SignalIn

router = APIRouter(prefix="/api", dependencies=[Depends(require_operator)])


@router.post("/execute-trade", status_code=201)
async def execute_trade(body: SignalIn, d: ApiDeps = Depends(deps)) -> Any:  # noqa: B008
    """Place the signal on every subscribed account (or the listed users). The same
    ``signal_id`` twice opens nothing new: the second answer is 200 with the first's trades."""
    report = await d.executor.execute(body.to_signal(), body.model_dump(mode="json"))
    return JSONResponse(report.as_json(), status_code=200 if report.duplicate else 201)
