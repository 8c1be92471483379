"""The HTTP API: ``create_app(deps)``; errors mapped to status codes in one place.

``GET /metrics`` (Prometheus text format, ``tradewire.metrics``) needs no token: it holds no
secrets, but it should only be reachable from the internal network (block it at the proxy /
scrape it from inside), like ``/healthz``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from tradewire import __version__, metrics
from tradewire.api import (
    routes_dlq,
    routes_intake,
    routes_signals,
    routes_trades,
    routes_users,
)
from tradewire.api.deps import ApiDeps
from tradewire.errors import (
    Conflict,
    ExchangeError,
    InvalidInput,
    NotFound,
    TradewireError,
    Unauthorized,
)
from tradewire.logging import log

logger = logging.getLogger("tradewire.api")

_STATUS: list[tuple[type[TradewireError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (ExchangeError, 502),
]


def create_app(deps: ApiDeps) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if deps.intake is not None:  # let accepted signals finish placing their orders
            await deps.intake.drain()

    app = FastAPI(title="tradewire", version=__version__, lifespan=lifespan)
    app.state.deps = deps
    app.include_router(routes_signals.router)
    app.include_router(routes_users.router)
    app.include_router(routes_trades.router)
    app.include_router(routes_intake.router)
    app.include_router(routes_dlq.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Unauthenticated, secret-free; scrape it from the internal network only."""
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    app.add_exception_handler(TradewireError, _tradewire_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    return app


async def _tradewire_error(request: Request, exc: TradewireError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    body: dict[str, object] = {"error": type(exc).__name__, "detail": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    if isinstance(exc, ExchangeError) and exc.code is not None:
        body["code"] = exc.code
    log(logger, logging.WARNING if status < 500 else logging.ERROR, "request failed",
        path=request.url.path, status=status, error=str(exc))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {
            "field": ".".join(str(p) for p in err["loc"] if p != "body"),
            "message": err["msg"],
        }
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return JSONResponse(
        {"error": "InvalidInput", "detail": detail, "field": first["field"], "problems": problems},
        status_code=422,
    )
