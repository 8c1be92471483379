"""Run the simulator under uvicorn inside the current event loop.

    async with SimulatorServer() as sim:          # port=0: a free port is picked
        httpx.get(f"{sim.base_url}/fapi/v1/time")
        websockets.connect(f"{sim.ws_url}/private/ws/{listen_key}")
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette

from tradewire.serving import BackgroundServer
from tradewire.simulator.app import create_app
from tradewire.simulator.engine import Engine
from tradewire.simulator.runtime import Runtime

WS_PING_INTERVAL_S = 180.0  # the exchange pings every 3 minutes
WS_PONG_TIMEOUT_S = 600.0  # and drops a socket with no pong within 10 minutes


class SimulatorServer(BackgroundServer):
    """The simulator listening on ``host:port`` as a task of the running event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, engine: Engine | None = None,
                 *, app: Starlette | None = None, ping_interval_s: float = WS_PING_INTERVAL_S,
                 pong_timeout_s: float = WS_PONG_TIMEOUT_S) -> None:
        super().__init__(
            app or create_app(engine), host, port, ws="websockets-sansio",
            ws_ping_interval=ping_interval_s, ws_ping_timeout=pong_timeout_s,
        )

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def engine(self) -> Engine:
        return self.runtime.engine


async def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run a simulator on the system clock until cancelled."""
    async with SimulatorServer(host, port):
        await asyncio.Event().wait()
