"""Measurement endpoints: the exchange's own view of a streams client (benchmarks, tests).

What a user-data client does is measured here, at the exchange, not inside the client:

- ``GET /sim/stats/listen-keys?since=<seq>&limit=<n>`` -> every listenKey call (POST, PUT,
  DELETE) in order from a ring buffer of the last ``capacity`` calls::

      {"totals": {"POST": n, "PUT": n, "DELETE": n}, "failed": {"PUT": n, ...},
       "first": seq, "next": seq,
       "fields": ["seq", "method", "api_key", "sim_ms", "mono_ms", "ok"],
       "calls": [[seq, "PUT", "<api key>", sim_ms, mono_ms, true], ...]}

  ``sim_ms`` is the engine clock (epoch ms on the system clock), ``mono_ms`` the host's
  ``CLOCK_MONOTONIC`` in ms (``time.monotonic()``: the same clock in every process of the host,
  so a benchmark can relate calls to its own timeline). Pass ``next`` back as ``since`` to read
  only newer calls; ``first`` > ``since`` means calls were overwritten in between.
- ``GET /sim/stats/streams`` -> the user-data sockets right now::

      {"connections": open sockets (private, market and legacy),
       "subscribed_connections": sockets subscribed to at least one listenKey,
       "subscriptions": listenKey subscriptions over all sockets,
       "accounts": accounts that ever started a listenKey,
       "listening": those whose live listenKey is subscribed on an open socket,
       "live_keys": those with a live listenKey,
       "connection_attempts": WebSocket handshakes so far, "connections_refused": refused ones}

  With ``?not_listening=1`` the answer also lists (up to 100) ``api_key`` values of accounts
  that started a listenKey and are not listening now.

``install(rt)`` wraps the engine's listenKey calls and the connection budget of one ``Runtime``
(idempotent); ``stats_routes(rt)`` installs and returns the two routes.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.simulator.engine import Engine
from tradewire.simulator.gateway import json_response
from tradewire.simulator.runtime import Runtime

CAPACITY = 200_000
FIELDS = ("seq", "method", "api_key", "sim_ms", "mono_ms", "ok")
MAX_NOT_LISTENING = 100

Call = tuple[int, str, str, int, float, bool]
_R = TypeVar("_R")
_INSTALLED: weakref.WeakKeyDictionary[Engine, StreamStats] = weakref.WeakKeyDictionary()


class StreamStats:
    """Counters and the listenKey call log of one simulator runtime."""

    def __init__(self, rt: Runtime, capacity: int = CAPACITY) -> None:
        self.rt = rt
        self.calls: deque[Call] = deque(maxlen=capacity)
        self.totals: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.accounts: set[str] = set()  # api keys that ever started a listenKey
        self.attempts = 0
        self.refused = 0
        self._seq = 0

    def record(self, method: str, api_key: str, ok: bool) -> None:
        self.calls.append((self._seq, method, api_key, self.rt.now(),
                           round(time.monotonic() * 1000, 3), ok))
        self._seq += 1
        self.totals[method] += 1
        if not ok:
            self.failed[method] += 1
        elif method == "POST":
            self.accounts.add(api_key)

    def listen_key_log(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        first = self.calls[0][0] if self.calls else self._seq
        skip = max(0, since - first)
        stop = None if limit is None else skip + limit
        rows = [list(call) for call in itertools.islice(self.calls, skip, stop)]
        return {
            "totals": {m: self.totals[m] for m in ("POST", "PUT", "DELETE")},
            "failed": {m: self.failed[m] for m in ("POST", "PUT", "DELETE")},
            "first": first, "next": first + skip + len(rows) if rows else max(since, first),
            "fields": list(FIELDS), "calls": rows,
        }

    def streams(self, with_missing: bool = False) -> dict[str, Any]:
        engine, hub = self.rt.engine, self.rt.hub
        sessions = list(hub.sessions)
        listening = live = 0
        missing: list[str] = []
        for api_key in self.accounts:
            key = engine.active_listen_key(api_key)
            if key is None:
                if with_missing and len(missing) < MAX_NOT_LISTENING:
                    missing.append(api_key)
                continue
            live += 1
            if hub.listeners(key) > 0:
                listening += 1
            elif with_missing and len(missing) < MAX_NOT_LISTENING:
                missing.append(api_key)
        body: dict[str, Any] = {
            "connections": len(sessions),
            "subscribed_connections": sum(1 for s in sessions if s.filters and not s.closing),
            "subscriptions": sum(len(s.filters) for s in sessions),
            "accounts": len(self.accounts), "listening": listening, "live_keys": live,
            "connection_attempts": self.attempts, "connections_refused": self.refused,
        }
        if with_missing:
            body["not_listening"] = missing
        return body


def install(rt: Runtime) -> StreamStats:
    """Start recording on ``rt`` (once; later calls return the same recorder)."""
    found = _INSTALLED.get(rt.engine)
    if found is not None:
        return found
    stats = StreamStats(rt)
    engine = rt.engine

    def recorded(method: str, call: Callable[[str], _R]) -> Callable[[str], _R]:
        def wrapper(api_key: str) -> _R:
            try:
                result = call(api_key)
            except Exception:
                stats.record(method, api_key, ok=False)
                raise
            stats.record(method, api_key, ok=True)
            return result

        return wrapper

    for name, method in (("start_listen_key", "POST"), ("keepalive_listen_key", "PUT"),
                         ("close_listen_key", "DELETE")):
        _shadow(engine, name, recorded(method, getattr(engine, name)))
    admit = rt.connections.admit

    def counted_admit(ip: str, now: int) -> bool:
        admitted = admit(ip, now)
        stats.attempts += 1
        stats.refused += 0 if admitted else 1
        return admitted

    _shadow(rt.connections, "admit", counted_admit)
    _INSTALLED[engine] = stats
    return stats


def _shadow(target: object, name: str, replacement: Callable[..., Any]) -> None:
    """An instance attribute in front of a method: every caller (the REST handlers, tests
    calling the engine) goes through ``replacement``."""
    setattr(target, name, replacement)


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw)  # ValueError -> 400
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value


def stats_routes(rt: Runtime) -> list[Route]:
    stats = install(rt)

    async def listen_keys(request: Request) -> Response:
        try:
            since = _int_param(request, "since", 0) or 0
            limit = _int_param(request, "limit", None)
        except ValueError:
            return json_response({"error": "since and limit must be integers >= 0"}, 400)
        return json_response(stats.listen_key_log(since, limit))

    async def streams(request: Request) -> Response:
        flag = request.query_params.get("not_listening", "")
        return json_response(stats.streams(with_missing=flag not in ("", "0", "false")))

    return [
        Route("/sim/stats/listen-keys", listen_keys, methods=["GET"]),
        Route("/sim/stats/streams", streams, methods=["GET"]),
    ]
