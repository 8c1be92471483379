"""Client-side rate budgets (reference §8): never send a request into a known exchange limit.

- ``ip_budget``: request weight per egress IP (2400/min), shared by every account's client behind
  that IP (``ClientPool`` owns one).
- ``order_budget``: one per account (300 orders/10 s and 1200/min).

Costs come from the endpoint table below, before a request is sent; each answer's
``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` headers re-synchronise the counters
(usage we did not send: another process on the same IP, a restart). See ``Window`` for how both
are counted. A request that does not fit waits (asynchronously) until its window allows it.

A 429/418 blocks the whole budget (``block``) for ``Retry-After``, the "banned until" time, or a
full window when the exchange gives no hint, so no client behind that IP sends anything in that
time (which is how a client never earns a 418).

Priority: cancels (``DELETE`` of orders) and reduce-only / closePosition orders (stop-losses,
take-profits, unwinds) may fill the budget up to ``priority_margin`` of the limit (others stop
at ``margin``) and are served before waiting ordinary requests. A request costing nothing on a
budget (a new order's 0 IP weight) never queues behind heavy ones there. A ban holds everything.

Budgets live in one process. Several processes behind one IP still see each other's usage
through the headers, but only after their answers arrive: give each a share of the limit
(``BudgetConfig(ip_weight=Limit(2400 // n, 60_000))``) to stay strictly under it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from tradewire.clock import Clock
from tradewire.errors import RateLimited

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Limit:
    """``amount`` per ``window_ms``."""

    amount: int
    window_ms: int


@dataclass(frozen=True)
class BudgetConfig:
    """The limits to respect; defaults are the exchange's (reference §8)."""

    ip_weight: Limit = Limit(2400, 60_000)
    orders: tuple[Limit, Limit] = (Limit(300, 10_000), Limit(1200, 60_000))
    margin: float = 0.9  # ordinary requests use at most 90 % of a limit
    priority_margin: float = 0.95  # cancels and reduce-only orders up to 95 %
    max_wait_s: float | None = None  # raise RateLimited instead of waiting longer than this


@dataclass(frozen=True)
class RequestCost:
    """What one request costs: IP weight, and new orders on the 10 s and 1 min counters."""

    weight: int
    orders_10s: int = 0
    orders_1m: int = 0


# (method, path) -> IP weight, or (with symbol, without symbol); new-order endpoints separately.
_WEIGHTS: dict[tuple[str, str], int | tuple[int, int]] = {
    ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("GET", "/fapi/v1/premiumIndex"): (1, 10),
    ("GET", "/fapi/v1/ticker/price"): (1, 2),
    ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/allOrders"): 5,
    ("GET", "/fapi/v1/allAlgoOrders"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("POST", "/fapi/v1/countdownCancelAll"): 10,
}
_ORDERS: dict[tuple[str, str], RequestCost] = {
    ("POST", "/fapi/v1/order"): RequestCost(0, 1, 1),
    ("PUT", "/fapi/v1/order"): RequestCost(0, 1, 1),
    ("POST", "/fapi/v1/algoOrder"): RequestCost(0, 1, 1),
    ("POST", "/fapi/v1/batchOrders"): RequestCost(5, 5, 1),
}
_CANCEL_PATHS = frozenset({
    "/fapi/v1/order", "/fapi/v1/batchOrders", "/fapi/v1/allOpenOrders", "/fapi/v1/algoOrder",
    "/fapi/v1/algoOpenOrders",
})
_MAX_STALLS = 100
DEFAULT_WEIGHT = 1  # every other endpoint (time, exchangeInfo, listenKey, leverage, cancels ...)


def request_cost(method: str, path: str, params: Mapping[str, object]) -> RequestCost:
    """The cost of one request, from the reference's weight tables."""
    order = _ORDERS.get((method, path))
    if order is not None:
        return order
    weight = _WEIGHTS.get((method, path), DEFAULT_WEIGHT)
    if isinstance(weight, tuple):
        weight = weight[0] if params.get("symbol") else weight[1]
    return RequestCost(weight)


def is_priority(method: str, path: str, params: Mapping[str, object]) -> bool:
    """Cancels and risk-reducing orders go first (see the module docstring)."""
    if method == "DELETE" and path in _CANCEL_PATHS:
        return True
    return params.get("reduceOnly") is True or params.get("closePosition") is True


class Window:
    """Spending against one limit, counted two ways; a request must fit both.

    - a sliding log of what this process sent in the last ``window_ms``: conservative for any
      alignment of the exchange's fixed windows;
    - the exchange's current fixed window (aligned to exchange time = local + ``offset_ms``),
      raised to the count a response header reports, so usage we did not send (another process
      on the IP, a restart) is respected until that window ends.
    """

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._log: deque[tuple[int, int]] = deque()
        self._total = 0
        self._fixed_index = -1
        self._fixed_count = 0

    def used(self, now: int, offset_ms: int = 0) -> int:
        self._expire(now)
        return max(self._total, self._fixed(now, offset_ms))

    def delay_ms(self, amount: int, cap: int, now: int, offset_ms: int = 0) -> int:
        """How long until ``amount`` more fits under ``cap`` (0: now)."""
        if amount <= 0:
            return 0
        self._expire(now)
        fixed = 0
        if self._fixed(now, offset_ms) + amount > cap:
            fixed = (self._index(now, offset_ms) + 1) * self.limit.window_ms - offset_ms - now
        return max(self._sliding_delay(self._total + amount - cap, now), fixed)

    def add(self, amount: int, now: int, offset_ms: int = 0) -> None:
        if amount <= 0:
            return
        if self._log and self._log[-1][0] == now:
            self._log[-1] = (now, self._log[-1][1] + amount)
        else:
            self._log.append((now, amount))
        self._total += amount
        self._fixed_count = self._fixed(now, offset_ms) + amount
        self._fixed_index = self._index(now, offset_ms)

    def resync(self, reported: int, sent_at: int, now: int, offset_ms: int = 0) -> None:
        """The exchange's count for its current window, from a response to a request sent at
        ``sent_at``: trusted only when sent and answered within one window (otherwise it may
        belong to the previous one). Raises the count, never lowers it."""
        index = self._index(now, offset_ms)
        if index != self._index(sent_at, offset_ms):
            return
        self._fixed_count = max(self._fixed(now, offset_ms), reported)
        self._fixed_index = index

    def _sliding_delay(self, excess: int, now: int) -> int:
        """Until enough of the log has expired to free ``excess``."""
        if excess <= 0:
            return 0
        freed = 0
        for at, spent in self._log:
            freed += spent
            if freed >= excess:
                return at + self.limit.window_ms - now
        return self.limit.window_ms

    def _index(self, now: int, offset_ms: int) -> int:
        return (now + offset_ms) // self.limit.window_ms

    def _fixed(self, now: int, offset_ms: int) -> int:
        return self._fixed_count if self._fixed_index == self._index(now, offset_ms) else 0

    def _expire(self, now: int) -> None:
        horizon = now - self.limit.window_ms
        log = self._log
        while log and log[0][0] <= horizon:
            self._total -= log.popleft()[1]


class RateBudget:
    """One or more windows spent together, with waiting, priority and bans."""

    def __init__(
        self, name: str, limits: Sequence[Limit], *, clock: Clock, sleep: Sleep | None = None,
        margin: float = 0.9, priority_margin: float = 0.95, max_wait_s: float | None = None,
    ) -> None:
        self.name = name
        self.windows = [Window(limit) for limit in limits]
        self._caps = [max(1, int(limit.amount * margin)) for limit in limits]
        self._priority_caps = [
            max(cap, int(limit.amount * priority_margin))
            for cap, limit in zip(self._caps, limits, strict=True)
        ]
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._max_wait_ms = None if max_wait_s is None else int(max_wait_s * 1000)
        self.blocked_until_ms = 0
        self.offset_ms = 0  # exchange time minus the budget clock (aligns the fixed windows)
        self._lock = asyncio.Lock()  # FIFO turn of ordinary requests
        self._priority_lock = asyncio.Lock()
        self._priority_waiting = 0
        self._no_priority = asyncio.Event()
        self._no_priority.set()

    def __repr__(self) -> str:
        now = self._clock.now_ms()
        used = "/".join(f"{w.used(now, self.offset_ms)}:{w.limit.amount}" for w in self.windows)
        return f"RateBudget({self.name!r}, used={used}, blocked_ms={self.blocked_for_ms()})"

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def used(self) -> list[int]:
        """What counts against each limit now (the larger of the two views, see ``Window``)."""
        now = self._clock.now_ms()
        return [w.used(now, self.offset_ms) for w in self.windows]

    def blocked_for_ms(self) -> int:
        return max(0, self.blocked_until_ms - self._clock.now_ms())

    async def acquire(self, costs: Sequence[int], *, priority: bool = False) -> None:
        """Wait until ``costs`` (one per window) fit and no ban is in force, then spend them."""
        self._check_possible(costs, priority)
        if not any(costs):  # e.g. an order's 0 IP weight: only a ban holds it, never the queue
            if self.blocked_until_ms > self._clock.now_ms():
                await self._wait_until_fits(costs, priority=True)
            return
        if self._ready(costs, priority):
            self._spend(costs)
            return
        if priority:
            await self._acquire_priority(costs)
        else:
            async with self._lock:
                await self._wait_until_fits(costs, priority=False)
                self._spend(costs)

    def resync(self, reported: Sequence[int | None], sent_at_ms: int) -> None:
        """Counters from the headers of a response to a request sent at ``sent_at_ms`` (budget
        clock), one per window (None: not reported)."""
        now = self._clock.now_ms()
        for window, value in zip(self.windows, reported, strict=True):
            if value is not None:
                window.resync(value, sent_at_ms, now, self.offset_ms)

    def block(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429/418); extends, never shortens, a ban."""
        until = self._clock.now_ms() + int(seconds * 1000 + 0.999)
        self.blocked_until_ms = max(self.blocked_until_ms, until)

    @property
    def longest_window_s(self) -> float:
        return max(w.limit.window_ms for w in self.windows) / 1000

    def _ready(self, costs: Sequence[int], priority: bool) -> bool:
        """Fits now, and nobody who goes first is waiting."""
        busy = self._priority_lock.locked() if priority else (
            self._lock.locked() or self._priority_waiting > 0)
        return not busy and self._delay_ms(costs, priority) == 0

    async def _acquire_priority(self, costs: Sequence[int]) -> None:
        self._priority_waiting += 1
        self._no_priority.clear()
        try:
            async with self._priority_lock:
                await self._wait_until_fits(costs, priority=True)
                self._spend(costs)
        finally:
            self._priority_waiting -= 1
            if self._priority_waiting == 0:
                self._no_priority.set()

    async def _wait_until_fits(self, costs: Sequence[int], *, priority: bool) -> None:
        started = self._clock.now_ms()
        stalled = 0
        while True:
            if not priority:
                await self._no_priority.wait()
            delay = self._delay_ms(costs, priority)
            if delay == 0:
                return
            now = self._clock.now_ms()
            if self._max_wait_ms is not None and now + delay - started > self._max_wait_ms:
                raise RateLimited(f"{self.name} budget: would wait {delay} ms",
                                  retry_after_s=delay / 1000)
            await self._sleep(delay / 1000)
            stalled = stalled + 1 if self._clock.now_ms() == now else 0
            if stalled >= _MAX_STALLS:  # a test clock nobody advances: fail, do not spin
                raise RuntimeError(f"{self.name} budget: the clock does not move while waiting")

    def _delay_ms(self, costs: Sequence[int], priority: bool) -> int:
        now = self._clock.now_ms()
        caps = self._priority_caps if priority else self._caps
        delays = [w.delay_ms(cost, cap, now, self.offset_ms)
                  for w, cost, cap in zip(self.windows, costs, caps, strict=True)]
        return max(self.blocked_until_ms - now, *delays, 0)

    def _spend(self, costs: Sequence[int]) -> None:
        now = self._clock.now_ms()
        for window, cost in zip(self.windows, costs, strict=True):
            window.add(cost, now, self.offset_ms)

    def _check_possible(self, costs: Sequence[int], priority: bool) -> None:
        caps = self._priority_caps if priority else self._caps
        for cost, cap in zip(costs, caps, strict=True):
            if cost > cap:
                raise RateLimited(f"{self.name} budget: a cost of {cost} can never fit in {cap}")


def ip_budget(config: BudgetConfig, clock: Clock, sleep: Sleep | None = None) -> RateBudget:
    """The request-weight budget of one egress IP (share it between all clients behind it)."""
    return RateBudget("ip weight", [config.ip_weight], clock=clock, sleep=sleep,
                      margin=config.margin, priority_margin=config.priority_margin,
                      max_wait_s=config.max_wait_s)


def order_budget(config: BudgetConfig, clock: Clock, sleep: Sleep | None = None) -> RateBudget:
    """The new-order budget of one account."""
    return RateBudget("orders", list(config.orders), clock=clock, sleep=sleep,
                      margin=config.margin, priority_margin=config.priority_margin,
                      max_wait_s=config.max_wait_s)
