"""The streams role (Layer 1): one ``AccountStream`` per active account, kept in step with the
database so that accounts added or disabled elsewhere start or stop within ``refresh_s``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from tradewire.clock import Clock
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import log
from tradewire.streams.account_stream import AccountStream, Publisher
from tradewire.streams.session import AccountRef

logger = logging.getLogger("tradewire.streams")

AccountsSource = Callable[[], Awaitable[Sequence[tuple[AccountRef, ExchangeClient]]]]


class StreamsManager:
    def __init__(
        self,
        accounts: AccountsSource,
        publish: Publisher,
        ws_base_url: str,
        clock: Clock,
        *,
        refresh_s: float = 2.0,
        keepalive_s: float = 1800.0,
    ) -> None:
        self._accounts = accounts
        self._publish = publish
        self._ws_base_url = ws_base_url
        self._clock = clock
        self._refresh_s = refresh_s
        self._keepalive_s = keepalive_s
        self.streams: dict[int, AccountStream] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._synced = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.sync()
                except Exception as exc:  # a DB hiccup must not kill the streams already up
                    log(logger, logging.ERROR, "account refresh failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._refresh_s)
        finally:
            await self.close()

    async def sync(self) -> None:
        """Start streams for new active accounts, stop those no longer active."""
        wanted = {ref.account_id: (ref, client) for ref, client in await self._accounts()}
        for account_id in set(self._tasks) - set(wanted):
            await self._stop(account_id)
        for account_id, (ref, client) in wanted.items():
            if account_id not in self._tasks:
                stream = AccountStream(ref, client, self._ws_base_url, self._publish, self._clock,
                                       keepalive_s=self._keepalive_s)
                self.streams[account_id] = stream
                self._tasks[account_id] = asyncio.create_task(stream.run())
                log(logger, logging.INFO, "stream started", userId=ref.user_id,
                    accountId=account_id)
        self._synced.set()

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until the accounts are loaded and every stream is connected (tests, demo)."""
        async with asyncio.timeout(timeout_s):
            await self._synced.wait()
            for stream in list(self.streams.values()):
                await stream.connected.wait()

    async def _stop(self, account_id: int) -> None:
        stream = self.streams.pop(account_id)
        stream.stop()
        task = self._tasks.pop(account_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log(logger, logging.INFO, "stream stopped", userId=stream.account.user_id,
            accountId=account_id)

    async def close(self) -> None:
        for account_id in list(self._tasks):
            await self._stop(account_id)
