"""The API and the signal executor wired to the in-process exchange simulator, no port opened.

``world`` builds the real app: a migrated SQLite database in ``tmp_path``, a fresh master key, the
simulator app reached through ``httpx.ASGITransport`` (its REST handlers advance the engine on
every request, so its lifespan tick task is not needed), ``ClientPool`` → ``Executor`` →
``ApiDeps`` → ``create_app``. Between the exchange clients and the simulator sits
``RefuseAlgoOrders``: a fault-injection transport that makes the exchange refuse chosen kinds of
conditional order, and forwards everything else untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.api.app import create_app
from tradewire.api.deps import ApiDeps
from tradewire.simulator import create_app as create_simulator_app
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.trading.clients import ClientPool
from tradewire.trading.execute import Executor

SIM_URL = "http://sim"
API_URL = "http://api"
TOKEN = "integration-operator-token"
BTC_MARK = "60000"
ETH_MARK = "3000"


class RefuseAlgoOrders(httpx.AsyncBaseTransport):
    """Fault injection at the transport: ``POST /fapi/v1/algoOrder`` whose ``type`` is in
    ``refused`` is answered 400 -2021 "Order would immediately trigger." without reaching the
    simulator; every other request is forwarded to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.refused: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (
            request.method == "POST"
            and request.url.path == "/fapi/v1/algoOrder"
            and request.url.params.get("type") in self.refused
        ):
            body = {"code": -2021, "msg": "Order would immediately trigger."}
            return httpx.Response(400, json=body, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Keys:
    """Credentials of one simulator account."""

    api_key: str
    api_secret: str


@dataclass
class World:
    """The operator's API client, the simulator's admin surface and the fault switch."""

    api: httpx.AsyncClient  # carries the operator's bearer token
    sim: httpx.AsyncClient  # the simulator admin surface (never faulty)
    faults: RefuseAlgoOrders
    api_transport: httpx.AsyncBaseTransport
    _names: int = field(default=0)

    def caller(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        """Another client of the same API, sending only ``headers`` (no operator token)."""
        return httpx.AsyncClient(transport=self.api_transport, base_url=API_URL, headers=headers)

    # --- the exchange ------------------------------------------------------------------------

    async def new_account(self, balance: str = "10000") -> Keys:
        answer = await self.sim.post("/sim/accounts", json={"balance": balance})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Keys(body["api_key"], body["api_secret"])

    async def set_mark(self, symbol: str, price: str) -> None:
        answer = await self.sim.post("/sim/mark-price", json={"symbol": symbol, "price": price})
        assert answer.status_code == 200, answer.text

    async def exchange_account(self, keys: Keys) -> dict[str, Any]:
        """What the exchange holds for the account: positions, open orders, open algo orders."""
        answer = await self.sim.get(f"/sim/accounts/{keys.api_key}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def exchange_refuses(self, *order_types: str) -> None:
        """From now on the exchange refuses conditional orders of these types with -2021."""
        self.faults.refused.update(order_types)

    # --- tradewire ---------------------------------------------------------------------------

    async def add_user(
        self, name: str | None = None, *, balance: str = "10000", **extra: Any
    ) -> tuple[int, Keys]:
        """A user registered with the keys of a fresh exchange account: (user id, keys)."""
        self._names += 1
        keys = await self.new_account(balance)
        body = {"name": name or f"user-{self._names}", "api_key": keys.api_key,
                "api_secret": keys.api_secret, **extra}
        answer = await self.api.post("/api/users", json=body)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"]), keys

    async def send_signal(self, signal_id: str, **overrides: Any) -> httpx.Response:
        return await self.api.post("/api/execute-trade", json=signal(signal_id, **overrides))

    async def trade(self, trade_id: int) -> dict[str, Any]:
        answer = await self.api.get(f"/api/trades/{trade_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def trades(self, **filters: Any) -> list[dict[str, Any]]:
        answer = await self.api.get("/api/trades", params=filters)
        assert answer.status_code == 200, answer.text
        body: list[dict[str, Any]] = answer.json()
        return body


def signal(signal_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid market LONG on BTCUSDT at the default mark (60000), worth 200 USDT per account."""
    body: dict[str, Any] = {
        "signal_id": signal_id, "symbol": "BTCUSDT", "side": "LONG", "entry": "market",
        "stop_loss": "58000", "take_profit": "63000", "leverage": 10, "size_usdt": "200",
    }
    return {**body, **overrides}


def legs(trade: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The orders of a ``GET /api/trades/{id}`` answer by leg (ENTRY, SL, TP)."""
    return {order["leg"]: order for order in trade["orders"]}


def body_text(response: httpx.Response) -> str:
    return json.dumps(response.json())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tradewire.db'}"
    await upgrade(db_url)
    engine, sessions = create_engine_and_sessions(db_url)
    box = SecretBox(os.urandom(32))
    sim_app = create_simulator_app()
    faults = RefuseAlgoOrders(httpx.ASGITransport(app=sim_app))
    try:
        async with (
            httpx.AsyncClient(transport=faults, base_url=SIM_URL) as exchange_http,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=sim_app), base_url=SIM_URL) as sim,
        ):
            executor = Executor(sessions, box, ClientPool(SIM_URL, exchange_http))
            api_app = create_app(ApiDeps(sessions=sessions, box=box, executor=executor, bus=None,
                                         token=TOKEN))
            api_transport = httpx.ASGITransport(app=api_app)
            async with httpx.AsyncClient(
                transport=api_transport, base_url=API_URL,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as api:
                w = World(api, sim, faults, api_transport)
                await w.set_mark("BTCUSDT", BTC_MARK)
                await w.set_mark("ETHUSDT", ETH_MARK)
                yield w
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store tests on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on ``db_url``, migrated to the newest schema."""
    await upgrade(db_url)
    engine, maker = create_engine_and_sessions(db_url)
    yield maker
    await engine.dispose()
