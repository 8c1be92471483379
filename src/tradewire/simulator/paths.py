"""Price paths for the simulator's marks: scripted steps, seeded random walks, kline replays.

A path is pure data: ``steps(start_price)`` yields ``(offset_ms, price)`` with non-decreasing
offsets, relative to the moment the path is attached to a symbol. ``Schedule`` merges the
attached paths of every symbol into one time-ordered sequence of due steps; nothing here reads
a clock — the engine asks for the steps due up to a time and applies them.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

Step = tuple[int, Decimal]  # (offset or time in ms, price)


class PricePath(Protocol):
    def steps(self, start_price: Decimal) -> Iterator[Step]: ...


@dataclass(frozen=True)
class ScriptedPath:
    """Given ``(offset_ms, price)`` steps, in order."""

    points: Sequence[Step]

    def __post_init__(self) -> None:
        offsets = [offset for offset, _ in self.points]
        if offsets != sorted(offsets) or any(o < 0 for o in offsets):
            raise ValueError("scripted offsets must be non-negative and non-decreasing")
        if any(price <= 0 for _, price in self.points):
            raise ValueError("scripted prices must be positive")

    def steps(self, start_price: Decimal) -> Iterator[Step]:
        return iter(self.points)


@dataclass(frozen=True)
class RandomWalk:
    """Geometric Brownian motion from the mark at attach time, one step every ``step_ms``.

    ``volatility`` is the standard deviation of the log return per step (0.001 = 0.1 %),
    ``drift`` its mean; the same ``seed`` gives the same path. ``count`` steps, or endless."""

    seed: int
    volatility: float
    step_ms: int
    drift: float = 0.0
    count: int | None = None

    def __post_init__(self) -> None:
        if self.step_ms <= 0 or self.volatility < 0:
            raise ValueError("step_ms must be positive and volatility not negative")

    def steps(self, start_price: Decimal) -> Iterator[Step]:
        rng = random.Random(self.seed)
        log_price = math.log(float(start_price))
        n = 0
        while self.count is None or n < self.count:
            n += 1
            shock = rng.gauss(0.0, 1.0)
            log_price += self.drift - self.volatility ** 2 / 2 + self.volatility * shock
            yield n * self.step_ms, Decimal(f"{math.exp(log_price):.10g}")


@dataclass(frozen=True)
class Candle:
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal

    @property
    def walk(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """O-L-H-C for a rising candle (close >= open), else O-H-L-C."""
        if self.close >= self.open:
            return self.open, self.low, self.high, self.close
        return self.open, self.high, self.low, self.close


@dataclass(frozen=True)
class KlineReplay:
    """Candles replayed as four steps each, a quarter interval apart, from the first open time.

    ``interval_ms`` defaults to the gap between the first two candles (one minute for one)."""

    candles: Sequence[Candle]
    interval_ms: int | None = None

    @classmethod
    def from_csv(cls, text: str, interval_ms: int | None = None) -> KlineReplay:
        """Rows of open time, open, high, low, close (more columns ignored; a header skipped)."""
        candles = []
        for row in csv.reader(io.StringIO(text)):
            if len(row) < 5 or not row[0].strip().isdigit():
                continue
            open_time, *prices = (cell.strip() for cell in row[:5])
            candles.append(Candle(int(open_time), *(Decimal(p) for p in prices)))
        if not candles:
            raise ValueError("no kline rows (open time, open, high, low, close)")
        return cls(candles, interval_ms)

    @property
    def interval(self) -> int:
        if self.interval_ms:
            return self.interval_ms
        if len(self.candles) > 1:
            return self.candles[1].open_time - self.candles[0].open_time
        return 60_000

    def steps(self, start_price: Decimal) -> Iterator[Step]:
        first, quarter = self.candles[0].open_time, self.interval // 4
        for candle in self.candles:
            base = candle.open_time - first
            for k, price in enumerate(candle.walk):
                yield base + k * quarter, price


class _Cursor:
    """One attached path walking through absolute time."""

    def __init__(self, path: PricePath, start_ms: int, start_price: Decimal) -> None:
        self._steps = path.steps(start_price)
        self._start = start_ms
        self.pending = self._pull()

    def _pull(self) -> Step | None:
        step = next(self._steps, None)
        return None if step is None else (self._start + step[0], step[1])

    def pop(self) -> Step:
        assert self.pending is not None
        step, self.pending = self.pending, self._pull()
        return step


class Schedule:
    """The attached path of each symbol; ``due`` yields their steps in time order."""

    def __init__(self) -> None:
        self._cursors: dict[str, _Cursor] = {}

    def attach(self, symbol: str, path: PricePath, start_ms: int, start_price: Decimal) -> None:
        """Replace the symbol's path."""
        self._cursors.pop(symbol, None)
        self._cursors[symbol] = _Cursor(path, start_ms, start_price)

    def detach(self, symbol: str) -> None:
        self._cursors.pop(symbol, None)

    @property
    def symbols(self) -> list[str]:
        return [s for s, c in self._cursors.items() if c.pending is not None]

    def next_time(self) -> int | None:
        times = [c.pending[0] for c in self._cursors.values() if c.pending is not None]
        return min(times, default=None)

    def due(self, until_ms: int) -> Iterator[tuple[int, str, Decimal]]:
        """``(time, symbol, price)`` of every step at or before ``until_ms``, earliest first
        (ties in attach order); lazily, so what a step triggers happens before the next."""
        while True:
            ready = [(c.pending[0], i, s) for i, (s, c) in enumerate(self._cursors.items())
                     if c.pending is not None and c.pending[0] <= until_ms]
            if not ready:
                return
            _, _, symbol = min(ready)
            time_ms, price = self._cursors[symbol].pop()
            yield time_ms, symbol, price
