"""The shared resources of a process, built from settings by each CLI composition root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tradewire.bus.base import Bus
from tradewire.bus.factory import create_bus
from tradewire.clock import Clock, SystemClock
from tradewire.config import Settings, master_key_bytes
from tradewire.exchange.budget import BudgetConfig, Limit
from tradewire.exchange.lean_http import LeanHttp
from tradewire.locks.base import Locks
from tradewire.locks.factory import create_locks
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.trading.clients import ClientPool


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    http: httpx.AsyncClient
    pool: ClientPool
    bus: Bus
    locks: Locks
    clock: Clock


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool = True, clock: Clock | None = None
) -> AsyncIterator[Runtime]:
    """Connect everything the roles need; migrate the database first when asked."""
    url = settings.resolved_database_url
    if migrate:
        await upgrade(url)
    engine, sessions = create_engine_and_sessions(url)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=5.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    # the keepalive PUTs (a streams pod's steady REST traffic) skip httpx when no proxy applies
    lean = (LeanHttp(settings.rest_base_url, timeout_s=10.0, connect_timeout_s=5.0)
            if LeanHttp.usable_for(settings.rest_base_url) else None)
    clock = clock or SystemClock()
    bus = create_bus(settings)
    locks = create_locks(settings)
    try:
        yield Runtime(
            settings=settings,
            engine=engine,
            sessions=sessions,
            box=SecretBox(master_key_bytes(settings)),
            http=http,
            pool=ClientPool(settings.rest_base_url, http, clock, budget=BudgetConfig(
                ip_weight=Limit(settings.ip_weight_per_minute, 60_000)), lean=lean),
            bus=bus,
            locks=locks,
            clock=clock,
        )
    finally:
        await bus.close()
        await locks.close()
        await http.aclose()
        if lean is not None:
            await lean.aclose()
        await engine.dispose()
