"""Exchange clients per account over one shared HTTP connection pool and one IP budget."""

from __future__ import annotations

import httpx

from tradewire.clock import Clock, SystemClock
from tradewire.exchange.budget import BudgetConfig, RateBudget, Sleep, ip_budget
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.lean_http import LeanHttp


class ClientPool:
    """One ``ExchangeClient`` per account (cached), all sharing ``http`` and one request-weight
    budget: the pool stands for one egress IP, whose 2400 weight/min every account spends
    together (reference §8). Each account's client keeps its own order budget. ``lean``
    (optional): the clients' keepalive PUTs go over it (``exchange.lean_http``)."""

    def __init__(
        self, base_url: str, http: httpx.AsyncClient, clock: Clock | None = None, *,
        budget: BudgetConfig | None = None, sleep: Sleep | None = None,
        lean: LeanHttp | None = None,
    ) -> None:
        self.base_url = base_url
        self.http = http
        self.lean = lean
        self.clock = clock
        self.budget = budget or BudgetConfig()
        self._sleep = sleep
        self.ip_budget: RateBudget = ip_budget(self.budget, clock or SystemClock(), sleep)
        self._clients: dict[int, ExchangeClient] = {}
        self._public: ExchangeClient | None = None

    def get(self, account_id: int, api_key: str, api_secret: str) -> ExchangeClient:
        """The account's client, cached per (account, api_key, api_secret): new credentials
        (a rotated key, or only a new secret) get a new client. The cache compares the
        secret with the one the cached client already signs with; it keeps no copy."""
        cached = self._clients.get(account_id)
        if cached is not None and cached.signs_with(api_key, api_secret):
            return cached
        client = self._new(api_key, api_secret)
        self._clients[account_id] = client
        return client

    def public(self) -> ExchangeClient:
        """A client for market data (no account keys)."""
        if self._public is None:
            self._public = self._new("", "")
        return self._public

    def _new(self, api_key: str, api_secret: str) -> ExchangeClient:
        return ExchangeClient(
            self.base_url, api_key, api_secret, http=self.http, clock=self.clock,
            sleep=self._sleep, ip_budget=self.ip_budget, budget=self.budget, lean=self.lean,
        )
