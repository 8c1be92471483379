"""Exchange clients per account over one shared HTTP connection pool."""

from __future__ import annotations

import httpx

from tradewire.clock import Clock
from tradewire.exchange.client import ExchangeClient


class ClientPool:
    """One ``ExchangeClient`` per account (cached), all sharing ``http``."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, clock: Clock | None = None) -> None:
        self.base_url = base_url
        self.http = http
        self.clock = clock
        self._clients: dict[int, tuple[str, ExchangeClient]] = {}
        self._public: ExchangeClient | None = None

    def get(self, account_id: int, api_key: str, api_secret: str) -> ExchangeClient:
        cached = self._clients.get(account_id)
        if cached is not None and cached[0] == api_key:
            return cached[1]
        client = ExchangeClient(
            self.base_url, api_key, api_secret, http=self.http, clock=self.clock
        )
        self._clients[account_id] = (api_key, client)
        return client

    def public(self) -> ExchangeClient:
        """A client for market data (no account keys)."""
        if self._public is None:
            self._public = ExchangeClient(self.base_url, "", "", http=self.http, clock=self.clock)
        return self._public
