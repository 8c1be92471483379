"""An in-process micro-batcher: concurrent ``submit`` calls are gathered (up to ``max_items``,
waiting at most ``wait_s`` for more) and applied together by one ``apply`` call; each caller
gets its own item's outcome (a result, or its own exception).

One batch is applied at a time; items submitted meanwhile form the next batch. A caller
cancelled before its batch starts is left out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Apply = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class MicroBatcher(Generic[T, R]):
    def __init__(self, apply: Apply[T, R], *, max_items: int = 256, wait_s: float = 0.002
                 ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self._apply = apply
        self.max_items, self.wait_s = max_items, wait_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # batches applied (statistics)
        self.items = 0  # items applied

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_items:
            self._full.set()
        if self._runner is None or self._runner.done():
            # a fresh context: the batch must not log with the first caller's bound fields
            self._runner = asyncio.create_task(self._run(), context=contextvars.Context())
        return await future

    async def _run(self) -> None:
        while self._pending:
            if len(self._pending) < self.max_items and self.wait_s > 0:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.wait_s):
                        await self._full.wait()
            taken, self._pending = (self._pending[:self.max_items],
                                    self._pending[self.max_items:])
            batch = [(item, future) for item, future in taken if not future.done()]
            if batch:
                await self._one(batch)

    async def _one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = await self._apply([item for item, _ in batch])
        except Exception as exc:  # the whole batch failed: every caller sees it
            outcomes = [exc] * len(batch)
        except BaseException as exc:  # cancelled: tell the callers, then stop
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError(f"batch interrupted: {exc!r}"))
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
