"""The distributed deployment: simulator, api, streams, two workers and a notifier as separate
processes on PostgreSQL + Redis Streams + Redis locks, driven through HTTP only."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import fresh_postgres_database, require_service
from tests.e2e.conftest import flush_redis

from tradewire.cli.demo import Endpoints, closed_by, orders_placed, run_scenario
from tradewire.notify.sink import WebhookSink
from tradewire.serving import BackgroundServer

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

TOKEN = "distributed-test-token"
REDIS = "redis://127.0.0.1:6379/12"
ROLES = ["api", "streams", "worker", "worker", "notifier"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.workdir / f"{name}-{len(self.procs)}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradewire.cli.main", *args, env=env, cwd=self.workdir,
                stdout=log, stderr=log,
            )
        self.procs.append((name, proc))

    async def stop(self) -> None:
        for _, proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                pytest.fail(f"{name} did not stop on SIGTERM")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.workdir.glob("*.log"))


async def wait_http(url: str, timeout_s: float = 30) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout_s):
        while True:
            try:
                if (await http.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Endpoints, WebhookSink, Processes]]:
    require_service("Redis", "127.0.0.1", 6379)
    await flush_redis(REDIS)
    sink = WebhookSink()
    procs = Processes(tmp_path)
    sim_port, api_port = free_port(), free_port()
    async with fresh_postgres_database() as database_url, BackgroundServer(sink.app) as hooks:
        env = {
            **os.environ, "TRADEWIRE_DATABASE_URL": database_url, "TRADEWIRE_BUS_URL": REDIS,
            "TRADEWIRE_LOCK_URL": REDIS, "TRADEWIRE_EXCHANGE_URL": f"http://127.0.0.1:{sim_port}",
            "TRADEWIRE_OPERATOR_TOKEN": TOKEN, "TRADEWIRE_API_PORT": str(api_port),
            "TRADEWIRE_DATA_DIR": str(tmp_path / "data"), "TRADEWIRE_LOG_LEVEL": "INFO",
            "TRADEWIRE_MASTER_KEY": "q6E0JQn3zXh8bH0r9a3tQ2cH7f1mV5yW4uK8pL0sD2E=",
            "TRADEWIRE_NOTIFIER_POLL_S": "0.1",
        }
        try:
            await procs.start("simulator", ["simulator", "--port", str(sim_port)], env)
            await wait_http(f"http://127.0.0.1:{sim_port}/fapi/v1/ping")
            await procs.start("api", ["api"], env)  # migrates the database first
            await wait_http(f"http://127.0.0.1:{api_port}/healthz")
            for i, role in enumerate(ROLES[1:]):
                await procs.start(role, [role], {**env, "TRADEWIRE_WORKER_NAME": f"w{i}"})
            ends = Endpoints(f"http://127.0.0.1:{api_port}", TOKEN,
                             f"http://127.0.0.1:{sim_port}", f"{hooks.base_url}/hooks")
            yield ends, sink, procs
        finally:
            await procs.stop()


async def test_the_scenario_runs_through_separate_processes(
    cluster: tuple[Endpoints, WebhookSink, Processes],
) -> None:
    """Stop-loss and take-profit close their trades, siblings are cancelled and both users are
    notified, with every role in its own process."""
    ends, sink, procs = cluster
    try:
        result = await run_scenario(ends, timeout_s=45)
        trades = result["trades"]
        assert closed_by(trades, "STOP_LOSS") == 1 and closed_by(trades, "TAKE_PROFIT") == 1
        assert orders_placed(trades) == 6
        await sink.wait_for(4, timeout_s=20)
    except BaseException:
        print(procs.logs())
        raise
    assert {t.split(" ·")[0] for t in sink.titles("alice")} >= {"Entry filled", "Stop-loss hit"}
    assert {t.split(" ·")[0] for t in sink.titles("bob")} >= {"Entry filled", "Take-profit hit"}
    async with httpx.AsyncClient(base_url=ends.sim_url) as sim:
        for key in result["api_keys"]:
            account = (await sim.get(f"/sim/accounts/{key}")).json()
            assert account["open_algo_orders"] == [], "siblings are cancelled at the exchange"
            assert account["positions"] == []
