"""Paced load from inside the simulator: synthetic events spread evenly over time.

``POST /sim/bench/emit`` sends a whole burst at once, which is what an ingest benchmark wants.
A latency benchmark wants the opposite: events arriving one by one at a steady rate, as they do
from an exchange serving thousands of accounts. A client cannot pace that finely (one HTTP call
per event costs more than the event), so the simulator does it on its own event loop:

- ``POST /sim/bench/pace`` ``{"count": n, "rate": r}`` -> ``{"scheduled": n, "rate": r}``: emits
  ``n`` balance ``ACCOUNT_UPDATE`` events (as ``/sim/bench/emit``, round-robin over the accounts
  with a live listenKey) at ``r`` events/s: the ``k``-th event is due ``k / r`` s after the
  start; each loop turn emits whatever is due (one at a time when on schedule) and sends it to
  the sockets at once. 409 while a paced run is going; ``rate`` 1..100,000.
- ``GET /sim/bench/pace`` -> ``{"running", "scheduled", "emitted", "rate", "late_max_ms",
  "elapsed_s", "turns"}``: progress; ``late_max_ms`` is the most an emission ran behind its due
  time (the simulator's own loop being busy), so a benchmark can tell a late source from a slow
  client. ``emitted`` stays below ``scheduled`` when nobody listens (nothing to emit to).
  ``turns``: wake-ups of the pacer (about one per event at rates up to 1,000/s).

The due count allows for float rounding: uvloop's clock has millisecond steps, so the clock
reads exactly an event's due time, and ``(now - start) * rate`` can come out as 4.9999999 for
the fifth event. Counted down to 4, the event was "not due" while the time left to wait was
~0, which uvloop runs as ``call_soon``: the pacer spun until the next millisecond, up to a
whole CPU core at 1,000 events/s — taken from the processes the benchmark measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.simulator.engine import Engine
from tradewire.simulator.gateway import json_response
from tradewire.simulator.handlers import MAX_EMIT
from tradewire.simulator.runtime import Runtime

MAX_RATE = 100_000
_ROUNDING = 1e-6  # of an event: float error in ``(now - start) * rate``, not a real lead


class Pacer:
    """At most one paced run at a time on one simulator runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.task: asyncio.Task[None] | None = None
        self.scheduled = self.emitted = 0
        self.rate = 0.0
        self.late_max_s = 0.0
        self.started = self.ended = 0.0
        self.turns = 0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, count: int, rate: float) -> None:
        if self.running:
            raise RuntimeError("a paced run is going")
        if not 0 <= count <= MAX_EMIT:
            raise ValueError(f"count must be 0..{MAX_EMIT}")
        if not 1 <= rate <= MAX_RATE:
            raise ValueError(f"rate must be 1..{MAX_RATE}")
        self.scheduled, self.rate, self.emitted, self.late_max_s = count, rate, 0, 0.0
        self.turns = 0
        loop = asyncio.get_running_loop()
        self.started = self.ended = loop.time()
        self.task = loop.create_task(self._run(loop))

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        engine, rate = self.rt.engine, self.rate
        try:
            while self.emitted < self.scheduled:
                self.turns += 1
                now = loop.time()
                # events whose due time (k / rate after the start) has come, k = emitted
                due = min(self.scheduled,
                          int((now - self.started) * rate + _ROUNDING) + 1) - self.emitted
                if due > 0:
                    self.late_max_s = max(
                        self.late_max_s, now - (self.started + self.emitted / rate))
                    if engine.emit_synthetic(due) == 0:
                        return  # nobody listens: nothing can be emitted
                    self.emitted += due
                    self.rt.publish()
                    if self.emitted >= self.scheduled:
                        break
                await asyncio.sleep(max(0.0, self.started + self.emitted / rate - loop.time()))
        finally:
            self.ended = loop.time()

    def status(self) -> dict[str, Any]:
        end = asyncio.get_running_loop().time() if self.running else self.ended
        return {"running": self.running, "scheduled": self.scheduled, "emitted": self.emitted,
                "rate": self.rate, "late_max_ms": round(self.late_max_s * 1000, 3),
                "elapsed_s": round(end - self.started, 3), "turns": self.turns}

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


_PACERS: weakref.WeakKeyDictionary[Engine, Pacer] = weakref.WeakKeyDictionary()


def pacer(rt: Runtime) -> Pacer:
    """The runtime's pacer (one per engine)."""
    found = _PACERS.get(rt.engine)
    if found is None:
        found = _PACERS[rt.engine] = Pacer(rt)
    return found


def pace_routes(rt: Runtime) -> list[Route]:
    async def start(request: Request) -> Response:
        try:
            body = await request.json()
            count, rate = body["count"], body["rate"]
            if type(count) is not int or type(rate) not in (int, float):
                raise ValueError("count must be an integer and rate a number")
            pacer(rt).start(count, float(rate))
        except RuntimeError as exc:
            return json_response({"error": str(exc)}, 409)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": f"bad body: {exc}"}, 400)
        return json_response({"scheduled": count, "rate": float(rate)})

    async def status(request: Request) -> Response:
        return json_response(pacer(rt).status())

    return [Route("/sim/bench/pace", start, methods=["POST"]),
            Route("/sim/bench/pace", status, methods=["GET"])]
