"""Every role in one process (``tradewire run`` and ``tradewire demo``).

``async with Stack(settings) as stack:`` starts the built-in simulator (when the exchange is
``sim``), migrates the database, and runs the API, streams, worker, notifier and DLQ monitor until
the block ends. Ports of 0 pick free ports; ``stack.settings`` holds the ones actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import httpx

from tradewire import metrics
from tradewire.bus.consumer import Consumer
from tradewire.cli import roles
from tradewire.cli.dlq import dlq_monitor
from tradewire.config import Settings
from tradewire.logging import log
from tradewire.notify.notifier import Notifier
from tradewire.processor.worker import EventProcessor
from tradewire.runtime import Runtime, open_runtime
from tradewire.serving import BackgroundServer
from tradewire.simulator.server import SimulatorServer
from tradewire.store import users
from tradewire.streams.manager import StreamsManager

logger = logging.getLogger("tradewire")


class Stack:
    def __init__(self, settings: Settings, *, refresh_s: float = 2.0) -> None:
        self.settings = settings
        self.refresh_s = refresh_s
        self.sim: SimulatorServer | None = None
        self.stop = asyncio.Event()
        self._exit = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.rt: Runtime
        self.api: BackgroundServer
        self.streams: StreamsManager
        self.consumer: Consumer
        self.processor: EventProcessor
        self.notifier: Notifier

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def _start(self) -> None:
        if self.settings.uses_simulator:
            self.sim = SimulatorServer(host=self.settings.sim_host, port=self.settings.sim_port)
            await self.sim.start()
            self._exit.push_async_callback(self.sim.stop)
            self.settings = self.settings.model_copy(update={"sim_port": self.sim.port})
            log(logger, logging.INFO, "built-in exchange simulator up", url=self.sim.base_url)
        self.rt = await self._exit.enter_async_context(open_runtime(self.settings))
        if self.sim is not None:
            await self._register_known_accounts()
        self.api = roles.api_server(self.rt)
        await self.api.start()
        self._exit.push_async_callback(self.api.stop)
        self.settings = self.settings.model_copy(update={"api_port": self.api.port})
        self.streams = roles.streams_manager(self.rt, refresh_s=self.refresh_s)
        self.consumer, self.processor = roles.worker(self.rt)
        self.notifier = roles.notifier(self.rt)
        self._task = asyncio.create_task(roles.until_stopped(
            self.stop, self.streams.run(self.stop), self.consumer.run(self.stop),
            self.notifier.run(self.stop), dlq_monitor(self.rt).run(self.stop),
            metrics.BusGaugeRefresher(self.rt.bus).run(self.stop),
        ))
        log(logger, logging.INFO, "tradewire is up", api=self.api.base_url)

    async def _register_known_accounts(self) -> None:
        """The built-in simulator keeps nothing across restarts: give it back the accounts
        already in the database so their keys keep working."""
        assert self.sim is not None
        async with self.rt.sessions() as session:
            known = await users.active_accounts(session, self.rt.box)
        async with httpx.AsyncClient(base_url=self.sim.base_url) as http:
            for account in known:
                await http.post("/sim/accounts", json={
                    "api_key": account.api_key, "api_secret": account.api_secret})

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop.set()
        if self._task is not None:
            await self._task
            await self.consumer.ownership.close()
        await self._exit.aclose()

    async def wait(self) -> None:
        """Until stopped (a signal sets ``stop``) or a role fails."""
        assert self._task is not None
        await asyncio.shield(self._task)
