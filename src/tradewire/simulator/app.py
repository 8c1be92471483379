"""``create_app``: the simulator as an ASGI app (REST + user-data WebSockets + admin)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from tradewire.clock import Clock
from tradewire.simulator.admin import admin_routes
from tradewire.simulator.conn_budget import ConnectionBudget
from tradewire.simulator.engine import Engine
from tradewire.simulator.gateway import route
from tradewire.simulator.limits import LimitConfig, Limits
from tradewire.simulator.rest import endpoints
from tradewire.simulator.runtime import Runtime
from tradewire.simulator.streams import StreamConfig, stream_routes

TICK_INTERVAL_S = 0.5


def create_app(
    engine: Engine | None = None, *, clock: Clock | None = None,
    limits: LimitConfig | None = None, streams: StreamConfig | None = None,
    tick_interval_s: float = TICK_INTERVAL_S,
) -> Starlette:
    """The simulator app. ``engine`` defaults to a fresh ``Engine(clock)``.

    ``app.state.runtime`` holds the engine, the socket hub, the limits (``limits``: REST;
    ``streams``: WebSocket rules and the connection budget) and the faults. A background
    task expires listenKeys every ``tick_interval_s`` while the app runs under a server."""
    stream_config = streams or StreamConfig()
    budget = ConnectionBudget(stream_config.connection_attempts_per_ip,
                              round(stream_config.connection_window_s * 1000))
    rt = Runtime(engine or Engine(clock), limits=Limits(limits), connections=budget)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(rt, tick_interval_s))
        try:
            yield
        finally:
            rt.hub.drop(code=1001)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    routes: list[BaseRoute] = [route(rt, endpoint) for endpoint in endpoints(rt)]
    routes += admin_routes(rt)
    routes += stream_routes(rt, stream_config)
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = rt
    return app


async def _tick_forever(rt: Runtime, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        rt.tick()
