"""Rate limits (reference §8): IP request weight, per-account order counters, 429 → 418 bans.

- **Weight**: ``ip_weight_per_minute`` (2400) per client IP in fixed one-minute windows, reported
  as ``X-MBX-USED-WEIGHT-1M``. Over it: HTTP 429 ``-1003``.
- **Orders**: per account, ``orders_per_10s`` (300) and ``orders_per_minute`` (1200) in fixed
  windows, reported as ``X-MBX-ORDER-COUNT-10S`` / ``-1M``. A request costs ``(on the 10 s
  counter, on the 1 min counter)``: order and algoOrder ``(1, 1)``, batchOrders ``(5, 1)``.
  Over either: HTTP 429 ``-1015``.
- **Escalation**: a 429 puts the client IP on notice until the refusing window resets. Once it
  has been refused ``refusals_before_ban`` times while on notice, its next refused request bans
  the IP: HTTP 418 ``-1003`` "Way too many requests; IP(..) banned until <epoch ms>" for every
  request until then. The ban lasts ``ban_ms`` (2 min), doubled for each earlier ban of that IP,
  at most ``max_ban_ms`` (3 days). The tolerance is not documented by the exchange (UNCONFIRMED).
- **Retry-After** (seconds, rounded up) on 429/418 when ``retry_after_header`` (sent by Spot;
  UNCONFIRMED for fapi, so it can be switched off).

Windows run on the engine clock, so a ``ManualClock`` drives them in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradewire.simulator.errors import SimError

MINUTE_MS = 60_000
TEN_SECONDS_MS = 10_000
BAN_MS = 2 * MINUTE_MS
MAX_BAN_MS = 3 * 24 * 60 * MINUTE_MS
WS_HINT = "Please use WebSocket Streams for live updates"


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

    def resets_at(self, now: int) -> int:
        return (now // self.window_ms + 1) * self.window_ms

    def clear(self) -> None:
        self._counts.clear()


@dataclass(frozen=True)
class LimitConfig:
    ip_weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    enforce: bool = True
    refusals_before_ban: int = 3  # 429s an IP may collect while on notice; the next one bans
    ban_ms: int = BAN_MS
    max_ban_ms: int = MAX_BAN_MS
    retry_after_header: bool = True


class RateLimited(SimError):
    """A 429 or 418 answer; ``headers`` go out with it (order counts, ``Retry-After``)."""

    def __init__(self, http_status: int, code: int, msg: str, *, retry_after_ms: int) -> None:
        super().__init__(http_status, code, msg)
        self.retry_after_s = max(1, -(-retry_after_ms // 1000))
        self.headers: dict[str, str] = {}


@dataclass
class _Offender:
    notice_until: int = 0  # end of the window whose limit refused the IP
    refusals: int = 0  # 429s while on notice
    bans: int = 0
    banned_until: int = 0


class Limits:
    def __init__(self, config: LimitConfig | None = None) -> None:
        self.config = config or LimitConfig()
        self._weight = WindowCounter(MINUTE_MS)
        self._orders_10s = WindowCounter(TEN_SECONDS_MS)
        self._orders_1m = WindowCounter(MINUTE_MS)
        self._offenders: dict[str, _Offender] = {}

    def banned_until(self, ip: str, now: int) -> int | None:
        """End of the IP's ban (epoch ms), or None when it is not banned."""
        found = self._offenders.get(ip)
        if self.config.enforce and found is not None and now < found.banned_until:
            return found.banned_until
        return None

    def check_ban(self, ip: str, now: int) -> None:
        """418 while the IP is banned."""
        until = self.banned_until(ip, now)
        if until is not None:
            raise banned_error(ip, until, now)

    def charge_weight(self, ip: str, weight: int, now: int) -> int:
        """Add request weight; 429 -1003 once the minute's budget is spent (418 when banned)."""
        self.check_ban(ip, now)
        used = self._weight.add(ip, weight, now)
        limit = self.config.ip_weight_per_minute
        if self.config.enforce and used > limit:
            reset = self._weight.resets_at(now)
            raise self._refuse(ip, now, reset, RateLimited(
                429, -1003, f"Too many requests; current limit of IP({ip}) is {limit} requests "
                            f"per minute. {WS_HINT} to avoid polling the API.",
                retry_after_ms=reset - now))
        return used

    def used_weight(self, ip: str, now: int) -> int:
        return self._weight.peek(ip, now)

    def charge_order(self, api_key: str, now: int, *, ip: str | None = None,
                     cost: tuple[int, int] = (1, 1)) -> tuple[int, int]:
        """Count a new order (or a batch); 429 -1015 over 300/10 s or 1200/min.

        Returns the account's (10 s, 1 min) counts; a refusal carries them as headers and
        counts toward the ban of ``ip``."""
        ten = self._orders_10s.add(api_key, cost[0], now)
        minute = self._orders_1m.add(api_key, cost[1], now)
        cfg = self.config
        if cfg.enforce and ten > cfg.orders_per_10s:
            limit, interval, counter = cfg.orders_per_10s, "TEN_SECONDS", self._orders_10s
        elif cfg.enforce and minute > cfg.orders_per_minute:
            limit, interval, counter = cfg.orders_per_minute, "MINUTE", self._orders_1m
        else:
            return ten, minute
        reset = counter.resets_at(now)
        error = self._refuse(ip, now, reset, RateLimited(
            429, -1015, f"Too many new orders; current limit is {limit} orders per {interval}.",
            retry_after_ms=reset - now))
        error.headers.update(order_count_headers(ten, minute))
        raise error

    def _refuse(self, ip: str | None, now: int, notice_until: int,
                error: RateLimited) -> RateLimited:
        """The 429 to answer, or a 418 (and a new ban) when the IP ignored earlier 429s."""
        if ip is None:
            return error
        offender = self._offenders.setdefault(ip, _Offender())
        if now >= offender.notice_until:
            offender.refusals = 0
        if offender.refusals >= self.config.refusals_before_ban:
            return self._ban(ip, offender, now)
        offender.refusals += 1
        offender.notice_until = max(offender.notice_until, notice_until)
        return error

    def _ban(self, ip: str, offender: _Offender, now: int) -> RateLimited:
        duration = min(self.config.ban_ms * 2 ** offender.bans, self.config.max_ban_ms)
        offender.bans += 1
        offender.banned_until = now + duration
        offender.refusals, offender.notice_until = 0, 0
        return banned_error(ip, offender.banned_until, now)

    def reset(self) -> None:
        """Forget every counter and ban (admin)."""
        for counter in (self._weight, self._orders_10s, self._orders_1m):
            counter.clear()
        self._offenders.clear()


def order_count_headers(ten: int, minute: int) -> dict[str, str]:
    return {"X-MBX-ORDER-COUNT-10S": str(ten), "X-MBX-ORDER-COUNT-1M": str(minute)}


def banned_error(ip: str, until: int, now: int) -> RateLimited:
    """418 -1003 for a banned IP."""
    return RateLimited(418, -1003, f"Way too many requests; IP({ip}) banned until {until}. "
                                   f"{WS_HINT} to avoid bans.", retry_after_ms=until - now)

