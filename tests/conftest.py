"""Shared test fixtures.

Tests that need a real service take one of the ``postgres_url``, ``redis_url`` or
``rabbitmq_url`` fixtures: the test is skipped when the service is absent locally and fails
when ``CI=true`` (CI must run every test).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings as _hypothesis_settings

IN_CI = os.environ.get("CI", "").lower() == "true"

# Property tests are reproducible by default (the same examples every run, so CI never fails on
# a new random draw); set HYPOTHESIS_EXPLORE=1 to search new examples locally.
_hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
_hypothesis_settings.register_profile("explore")
_hypothesis_settings.load_profile(
    "explore" if os.environ.get("HYPOTHESIS_EXPLORE") else "repeatable")

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when a service is not reachable."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services must be up)")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """Create an empty PostgreSQL database; yields its SQLAlchemy URL; drops it afterwards."""
    require_service("PostgreSQL", PG_HOST, 5432)
    import asyncpg

    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=PG_HOST, user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"
    finally:
        admin = await asyncpg.connect(host=PG_HOST, user="postgres", database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    async with fresh_postgres_database() as url:
        yield url
