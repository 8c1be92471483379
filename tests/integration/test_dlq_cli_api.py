"""The DLQ and bus operator endpoints (embedded bus behind the real app) and the
``tradewire dlq|bus`` commands (Redis Streams, db 14, flushed around each test)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from tradewire.api.app import create_app
from tradewire.api.deps import ApiDeps
from tradewire.bus.base import Bus, DeadLetter, Envelope, Message
from tradewire.bus.embedded import EmbeddedBus
from tradewire.bus.redis_streams import RedisStreamsBus
from tradewire.cli.main import main
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions
from tradewire.trading.clients import ClientPool
from tradewire.trading.execute import Executor

TOKEN = "dlq-operator-token"
PARTITIONS = 4


def envelope(user_id: int, symbol: str, seq: int = 0) -> Envelope:
    return Envelope(
        event_id=f"ev-{user_id}-{symbol}-{seq}", account_id=user_id, user_id=user_id,
        symbol=symbol, received_ms=1_767_000_000_000 + seq, event={"seq": seq},
    )


async def bury(bus: Bus, env: Envelope, error: str = "db down") -> None:
    await bus.publish(env)
    got: list[Message] = []
    while not got:
        got = await bus.fetch("c1", 1, 100)
    [message] = got
    await bus.dead_letter(message, DeadLetter(
        id="", original_id=message.id, partition=message.partition, body=message.body,
        attempts=3, error=error, error_type="OperationalError", first_failed_ms=1,
        last_failed_ms=2, extra={"user_id": str(env.user_id), "symbol": env.symbol},
    ))


# -- API ---------------------------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedBus]]:
    engine, sessions = create_engine_and_sessions(f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}")
    bus = EmbeddedBus(PARTITIONS)
    async with httpx.AsyncClient() as exchange_http:
        box = SecretBox(os.urandom(32))
        app = create_app(ApiDeps(
            sessions=sessions, box=box, executor=Executor(sessions, box,
                                                          ClientPool("http://sim", exchange_http)),
            bus=bus, token=TOKEN,
        ))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            yield client, bus
    await engine.dispose()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/dlq"), ("GET", "/api/dlq/1-0"), ("POST", "/api/dlq/replay"),
    ("POST", "/api/dlq/purge"), ("GET", "/api/bus"), ("POST", "/api/bus/pause"),
    ("POST", "/api/bus/resume"),
])
async def test_every_endpoint_needs_the_bearer_token(
    api: tuple[httpx.AsyncClient, EmbeddedBus], method: str, path: str
) -> None:
    """Without the operator's token each DLQ/bus endpoint answers 401 and changes nothing."""
    client, bus = api
    answer = await client.request(method, path, json={"all": True},
                                  headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 401
    assert not await bus.is_paused()


async def test_list_show_replay_and_purge_through_the_api(
    api: tuple[httpx.AsyncClient, EmbeddedBus],
) -> None:
    """Operators filter, inspect, dry-run, replay (marked ``replay_of``) and purge entries."""
    client, bus = api
    await bury(bus, envelope(1, "BTCUSDT"))
    await bury(bus, envelope(2, "ETHUSDT"), error="timeout")
    listed = (await client.get("/api/dlq", params={"user_id": 1})).json()
    assert listed["size"] == 2 and [e["symbol"] for e in listed["entries"]] == ["BTCUSDT"]
    first = listed["entries"][0]["id"]
    assert (await client.get("/api/dlq", params={"error": "timeout"})).json()["entries"][0][
        "user_id"] == 2
    assert (await client.get(f"/api/dlq/{first}")).json()["error"] == "db down"
    assert (await client.get("/api/dlq/424242-0")).status_code == 404
    assert (await client.post("/api/dlq/replay", json={})).status_code == 422
    dry = (await client.post("/api/dlq/replay", json={"ids": [first], "dry_run": True})).json()
    assert dry["entries"][0]["action"] == "would-replay" and dry["dlq_size"] == 2
    done = (await client.post("/api/dlq/replay", json={"ids": [first]})).json()
    assert done["entries"][0]["action"] == "replayed" and done["dlq_size"] == 1
    [message] = await bus.fetch("w", 10, 50)
    assert Envelope.decode(message.body).replay_of == first
    purged = (await client.post("/api/dlq/purge", json={"symbol": "ethusdt"})).json()
    assert [e["action"] for e in purged["entries"]] == ["purged"] and purged["dlq_size"] == 0


async def test_pause_resume_and_status_through_the_api(
    api: tuple[httpx.AsyncClient, EmbeddedBus],
) -> None:
    """``/api/bus/pause`` and ``/resume`` flip the shared flag that ``GET /api/bus`` reports."""
    client, bus = api
    assert (await client.post("/api/bus/pause")).json()["paused"] is True
    assert await bus.is_paused()
    status = (await client.get("/api/bus")).json()
    assert status == {"paused": True, "pending": 0, "dlq_size": 0}
    assert (await client.post("/api/bus/resume")).json()["paused"] is False


# -- CLI (Redis) -------------------------------------------------------------------------------


@pytest.fixture
def redis_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = urlunsplit(urlsplit(redis_url)._replace(path="/14"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    monkeypatch.setenv("TRADEWIRE_BUS_URL", url)
    monkeypatch.setenv("TRADEWIRE_BUS_PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("TRADEWIRE_LOG_FORMAT", "console")
    yield url
    client.flushdb()
    client.close()


def seed(url: str, *envs: Envelope) -> None:
    async def go() -> None:
        bus = RedisStreamsBus(url, PARTITIONS)
        try:
            for env in envs:
                await bury(bus, env)
        finally:
            await bus.close()

    asyncio.run(go())


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.redis
def test_cli_json_output_parses_for_list_show_replay_and_purge(
    redis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tradewire dlq list|show|replay|purge --json`` print one parseable JSON document."""
    seed(redis_env, envelope(1, "BTCUSDT"), envelope(2, "ETHUSDT"))
    listed = run_json(capsys, "dlq", "list", "--user", "2", "--json")
    entries = listed["entries"]
    assert isinstance(entries, list) and listed["size"] == 2 and len(entries) == 1
    entry_id = entries[0]["id"]
    assert run_json(capsys, "dlq", "show", entry_id, "--json")["symbol"] == "ETHUSDT"
    dry = run_json(capsys, "dlq", "replay", entry_id, "--dry-run", "--json")
    assert dry["dlq_size"] == 2
    replayed = run_json(capsys, "dlq", "replay", entry_id, "--json")
    assert replayed["dlq_size"] == 1
    purged = run_json(capsys, "dlq", "purge", "--all", "--json")
    assert purged["dlq_size"] == 0
    assert main(["dlq", "show", entry_id]) == 1
    assert main(["dlq", "purge"]) == 2  # neither ids, filters nor --all


@pytest.mark.redis
def test_cli_bus_pause_resume_status(
    redis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tradewire bus pause|status|resume`` set and report the shared pause flag."""
    assert run_json(capsys, "bus", "pause")["paused"] is True
    assert run_json(capsys, "bus", "status") == {"paused": True, "pending": 0, "dlq_size": 0}
    assert run_json(capsys, "bus", "resume")["paused"] is False


def test_cli_refuses_the_in_process_memory_bus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the in-process memory bus the commands point to the API instead of showing an
    empty DLQ."""
    monkeypatch.setenv("TRADEWIRE_BUS_URL", "memory")
    assert main(["dlq", "list"]) == 2
    assert "/api/dlq" in capsys.readouterr().err


def test_cli_reads_the_embedded_bus_file_of_a_one_machine_deployment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The embedded bus is a file (data/bus.db): the CLI opens it like a shared bus."""
    monkeypatch.setenv("TRADEWIRE_BUS_URL", "embedded")
    monkeypatch.setenv("TRADEWIRE_DATA_DIR", str(tmp_path))
    assert run_json(capsys, "bus", "status") == {"paused": False, "pending": 0, "dlq_size": 0}
