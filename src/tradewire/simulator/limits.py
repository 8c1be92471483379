"""Rate limits: IP request weight per minute and per-account order counters (reference §8)."""

from __future__ import annotations

from dataclasses import dataclass

from tradewire.simulator.errors import SimError


class WindowCounter:
    """Counts per key in fixed windows of ``window_ms`` (the exchange's minute/10 s buckets)."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._counts: dict[str, tuple[int, int]] = {}

    def add(self, key: str, amount: int, now: int) -> int:
        total = self.peek(key, now) + amount
        self._counts[key] = (now // self.window_ms, total)
        return total

    def peek(self, key: str, now: int) -> int:
        window, count = self._counts.get(key, (-1, 0))
        return count if window == now // self.window_ms else 0


@dataclass(frozen=True)
class LimitConfig:
    ip_weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    enforce: bool = True


class Limits:
    def __init__(self, config: LimitConfig | None = None) -> None:
        self.config = config or LimitConfig()
        self._weight = WindowCounter(60_000)
        self._orders_10s = WindowCounter(10_000)
        self._orders_1m = WindowCounter(60_000)

    def charge_weight(self, ip: str, weight: int, now: int) -> int:
        """Add request weight; 429 -1003 once the minute's budget is spent."""
        used = self._weight.add(ip, weight, now)
        limit = self.config.ip_weight_per_minute
        if self.config.enforce and used > limit:
            raise SimError(429, -1003, f"Too many requests; current limit of IP({ip}) is {limit} "
                                       "requests per minute. Please use the websocket for live "
                                       "updates to avoid polling the API.")
        return used

    def used_weight(self, ip: str, now: int) -> int:
        return self._weight.peek(ip, now)

    def charge_order(self, api_key: str, now: int) -> tuple[int, int]:
        """Count one new order; 429 -1015 over 300/10 s or 1200/min. Returns (10 s, 1 min)."""
        ten = self._orders_10s.add(api_key, 1, now)
        minute = self._orders_1m.add(api_key, 1, now)
        cfg = self.config
        if cfg.enforce and ten > cfg.orders_per_10s:
            raise _too_many_orders(cfg.orders_per_10s, "TEN_SECONDS")
        if cfg.enforce and minute > cfg.orders_per_minute:
            raise _too_many_orders(cfg.orders_per_minute, "MINUTE")
        return ten, minute


def _too_many_orders(limit: int, interval: str) -> SimError:
    return SimError(429, -1015, f"Too many new orders; current limit is {limit} orders per "
                                f"{interval}.")
