"""Run the simulator under uvicorn inside the current event loop.

    async with SimulatorServer() as sim:          # port=0: a free port is picked
        httpx.get(f"{sim.base_url}/fapi/v1/time")
        websockets.connect(f"{sim.ws_url}/private/ws/{listen_key}")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from tradewire.simulator.app import create_app
from tradewire.simulator.engine import Engine
from tradewire.simulator.runtime import Runtime

WS_PING_INTERVAL_S = 180.0  # the exchange pings every 3 minutes
WS_PONG_TIMEOUT_S = 600.0  # and drops a socket with no pong within 10 minutes


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class SimulatorServer:
    """The simulator listening on ``host:port`` as a task of the running event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, engine: Engine | None = None,
                 *, app: Starlette | None = None) -> None:
        self.host = host
        self.port = port
        self.app = app or create_app(engine)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    @property
    def base_url(self) -> str:
        return f"http://{self._netloc}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind (``port=0`` picks a free port) and serve until ``stop()``."""
        if self._task is not None:
            raise RuntimeError("simulator already started")
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", ws="websockets-sansio",
            ws_ping_interval=WS_PING_INTERVAL_S, ws_ping_timeout=WS_PONG_TIMEOUT_S,
            timeout_graceful_shutdown=2,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # raises what stopped it
                raise RuntimeError("simulator server stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server, self._task = None, None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


async def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run a simulator on the system clock until cancelled."""
    async with SimulatorServer(host, port):
        await asyncio.Event().wait()
