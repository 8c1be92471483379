"""Waiting in tests: poll a condition until it holds, fail naming what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def until(check: Callable[[], Any | Awaitable[Any]], what: str = "the condition",
                timeout_s: float = 5.0, *, every_s: float = 0.02) -> float:
    """Seconds until ``check()`` (sync or async) is truthy, polled every ``every_s``; the test
    fails after ``timeout_s`` naming ``what``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return time.monotonic() - started
                await asyncio.sleep(every_s)
    except TimeoutError:
        pytest.fail(f"not within {timeout_s} s: {what}")
