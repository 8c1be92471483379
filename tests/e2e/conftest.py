"""End-to-end fixtures: a whole tradewire stack in this process, on either deployment shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import fresh_postgres_database, require_service

from tradewire.cli.demo import Endpoints
from tradewire.cli.stack import Stack
from tradewire.config import Settings, operator_token
from tradewire.notify.sink import WebhookSink
from tradewire.serving import BackgroundServer


def stack_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test stack: free ports, fast retries, a private data folder."""
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data", "api_port": 0, "sim_port": 0, "log_level": "WARNING",
        "retry_delays_s": (0.05, 0.1, 0.15), "redelivery_idle_s": 2.0,
        "notifier_poll_s": 0.05, "operator_token": "test-token",
    }
    return Settings(**{**base, **overrides})


@pytest.fixture(params=["embedded", "postgres+redis"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Settings]:
    """The one-machine defaults, and PostgreSQL + Redis Streams + Redis locks."""
    if request.param == "embedded":
        yield stack_settings(tmp_path)
        return
    require_service("Redis", "127.0.0.1", 6379)
    redis_url = "redis://127.0.0.1:6379/13"
    await flush_redis(redis_url)
    async with fresh_postgres_database() as database_url:
        yield stack_settings(
            tmp_path, database_url=database_url, bus_url=redis_url, lock_url=redis_url
        )


async def flush_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


class Harness:
    def __init__(self, stack: Stack, sink: WebhookSink, sink_url: str) -> None:
        self.stack = stack
        self.sink = sink
        assert stack.sim is not None
        self.ends = Endpoints(
            stack.api.base_url, operator_token(stack.settings), stack.sim.base_url,
            f"{sink_url}/hooks",
        )


async def start_harness(settings: Settings) -> AsyncIterator[Harness]:
    sink = WebhookSink()
    async with Stack(settings, refresh_s=0.2) as stack, BackgroundServer(sink.app) as server:
        yield Harness(stack, sink, server.base_url)
