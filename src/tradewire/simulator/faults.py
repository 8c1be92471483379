"""Fault injection (reference §11.8): what a test can make the simulated exchange do wrong.

``Faults`` only holds the armed faults; the REST edge (``gateway``), the algo queries (``rest``)
and the event fan-out (``Runtime.publish``) consult it. Use it from Python as
``runtime.faults`` or over HTTP through ``POST /sim/faults/...`` (bodies in ``admin``).
Faults armed "for an account" (``api_key``) win over global ones (``api_key=None``).

- ``drop_connections``: close user-data sockets now (all, an account's, or one listenKey's).
- ``silence``: swallow the events of an account or listenKey while its sockets stay open (pings
  and control replies still flow) until ``unsilence``; swallowed events are gone.
- Events produced while an account has no socket are lost, silenced or not: the hub fans out
  only to sockets subscribed at that moment and queues nothing for later (reference §1.8).
- ``unknown_outcome``: the next ``count`` placements are executed, but answered HTTP 503
  ``{"code": -1000, "msg": "Unknown error, please check your request or try again later."}``.
  A placement the engine rejects answers its rejection and leaves the fault armed.
- ``throttle``: the next ``count`` placements fail with HTTP 503 ``-1008`` and are not executed
  nor counted; reduce-only and closePosition orders pass and leave the fault armed.
- ``slow``: every REST answer (of an account, or all) leaves ``ms`` later (after execution).
- ``hide_algos``: algo orders placed while armed are unknown to ``GET /fapi/v1/algoOrder``
  (-2013), ``openAlgoOrders`` and ``allAlgoOrders`` for ``ms`` on the engine clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tradewire.simulator.core import Delivery
from tradewire.simulator.engine import Engine
from tradewire.simulator.errors import SimError
from tradewire.simulator.hub import Hub

ORDER = "order"  # POST /fapi/v1/order
ALGO_ORDER = "algoOrder"  # POST /fapi/v1/algoOrder
PLACEMENTS = frozenset({ORDER, ALGO_ORDER})
UNKNOWN_CODE = -1000
UNKNOWN_MSG = "Unknown error, please check your request or try again later."
THROTTLED = (-1008, "Request throttled by system-level protection. Reduce-only/close-position "
                    "orders are exempt. Please try again.")


@dataclass
class Armed:
    """A fault for the next ``remaining`` placements on ``endpoints``."""

    remaining: int
    endpoints: frozenset[str]
    code: int = UNKNOWN_CODE

    def take(self, placement: str) -> bool:
        if self.remaining <= 0 or placement not in self.endpoints:
            return False
        self.remaining -= 1
        return True


@dataclass
class AlgoHiding:
    ms: int
    remaining: int | None  # None: every algo order placed while armed


def unknown_outcome_error(code: int = UNKNOWN_CODE) -> SimError:
    return SimError(503, code, UNKNOWN_MSG)


def throttled_error() -> SimError:
    return SimError(503, *THROTTLED)


def _check_endpoints(endpoints: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(endpoints)
    if not chosen or not chosen <= PLACEMENTS:
        raise ValueError(f"endpoints must be a non-empty subset of {sorted(PLACEMENTS)}")
    return chosen


def _count(count: int) -> int:
    if count < 1:
        raise ValueError("count must be at least 1")
    return count


class Faults:
    """The faults armed on one simulator."""

    def __init__(self, engine: Engine, hub: Hub) -> None:
        self.engine = engine
        self.hub = hub
        self.silenced_accounts: set[str] = set()
        self.silenced_keys: set[str] = set()
        self.unknown: dict[str | None, Armed] = {}
        self.throttled: dict[str | None, Armed] = {}
        self.delays_ms: dict[str | None, int] = {}
        self.algo_hiding: dict[str | None, AlgoHiding] = {}
        self.hidden_algos: dict[int, int] = {}  # algoId -> engine time it becomes visible

    # -- arming ----------------------------------------------------------------------------

    def drop_connections(self, api_key: str | None = None, listen_key: str | None = None,
                         *, code: int = 1011) -> int:
        """Close the sockets of one listenKey, of an account, or all; how many were closed."""
        keys = self._keys(api_key, listen_key)
        return self.hub.drop(keys, code=code)

    def silence(self, api_key: str | None = None, listen_key: str | None = None) -> None:
        """Swallow the events of a listenKey, or of every key of an account."""
        self._silenced(listen_key).add(self._target(api_key, listen_key))

    def unsilence(self, api_key: str | None = None, listen_key: str | None = None) -> None:
        self._silenced(listen_key).discard(self._target(api_key, listen_key))

    def unknown_outcome(self, api_key: str | None = None, count: int = 1, *,
                        code: int = UNKNOWN_CODE,
                        endpoints: Iterable[str] = (ORDER, ALGO_ORDER)) -> None:
        """Execute the next ``count`` placements but answer them 503 "Unknown error"."""
        self.unknown[api_key] = Armed(_count(count), _check_endpoints(endpoints), code)

    def throttle(self, api_key: str | None = None, count: int = 1, *,
                 endpoints: Iterable[str] = (ORDER,)) -> None:
        """Refuse the next ``count`` placements that are not risk-reducing with -1008."""
        self.throttled[api_key] = Armed(_count(count), _check_endpoints(endpoints))

    def slow(self, ms: int, api_key: str | None = None) -> None:
        """Delay REST answers by ``ms`` (0 removes the delay)."""
        if ms < 0:
            raise ValueError("ms must not be negative")
        self.delays_ms[api_key] = ms

    def hide_algos(self, ms: int, api_key: str | None = None, count: int | None = None) -> None:
        """Keep the next ``count`` (None: all) new algo orders unqueryable for ``ms``."""
        if ms < 0:
            raise ValueError("ms must not be negative")
        self.algo_hiding[api_key] = AlgoHiding(ms, None if count is None else _count(count))

    def clear(self) -> None:
        """Disarm every fault (algo orders already hidden become visible)."""
        for armed in (self.silenced_accounts, self.silenced_keys, self.unknown, self.throttled,
                      self.delays_ms, self.algo_hiding, self.hidden_algos):
            armed.clear()

    # -- consulted by the edges ------------------------------------------------------------

    def deliverable(self, deliveries: Iterable[Delivery]) -> list[Delivery]:
        """The deliveries not swallowed by a silence."""
        return [d for d in deliveries if d.api_key not in self.silenced_accounts
                and d.listen_key not in self.silenced_keys]

    def take_throttle(self, api_key: str, placement: str, *, risk_reducing: bool) -> bool:
        """Whether this placement is refused with -1008 (consumes one armed count)."""
        if risk_reducing:
            return False
        return self._take(self.throttled, api_key, placement) is not None

    def take_unknown_outcome(self, api_key: str, placement: str) -> SimError | None:
        """The 503 to answer instead of this (executed) placement's result, if armed."""
        armed = self._take(self.unknown, api_key, placement)
        return None if armed is None else unknown_outcome_error(armed.code)

    def delay_s(self, api_key: str) -> float:
        ms = self.delays_ms.get(api_key) if api_key else None
        return (ms if ms is not None else self.delays_ms.get(None, 0)) / 1000

    def algo_placed(self, api_key: str, algo_id: int, now: int) -> None:
        owner = api_key if api_key in self.algo_hiding else None
        hiding = self.algo_hiding.get(owner)
        if hiding is None:
            return
        self.hidden_algos[algo_id] = now + hiding.ms
        if hiding.remaining is not None:
            hiding.remaining -= 1
            if hiding.remaining <= 0:
                del self.algo_hiding[owner]

    def algo_hidden(self, algo_id: int, now: int) -> bool:
        visible_at = self.hidden_algos.get(algo_id)
        if visible_at is not None and now >= visible_at:
            del self.hidden_algos[algo_id]
            return False
        return visible_at is not None

    def snapshot(self) -> dict[str, Any]:
        """What is armed, as JSON (``GET /sim/faults``)."""
        def by_account(armed: dict[str | None, Any]) -> dict[str, Any]:
            return {key or "*": value for key, value in armed.items()}

        return {
            "silenced": {"api_keys": sorted(self.silenced_accounts),
                         "listen_keys": sorted(self.silenced_keys)},
            "unknown_outcome": by_account({k: {"count": a.remaining, "code": a.code,
                                               "endpoints": sorted(a.endpoints)}
                                           for k, a in self.unknown.items() if a.remaining}),
            "throttle": by_account({k: {"count": a.remaining, "endpoints": sorted(a.endpoints)}
                                    for k, a in self.throttled.items() if a.remaining}),
            "slow_ms": by_account(self.delays_ms),
            "hide_algos": by_account({k: {"ms": h.ms, "count": h.remaining}
                                      for k, h in self.algo_hiding.items()}),
            "hidden_algo_ids": sorted(self.hidden_algos),
        }

    # -- helpers ---------------------------------------------------------------------------

    def _take(self, armed: dict[str | None, Armed], api_key: str,
              placement: str) -> Armed | None:
        for owner in (api_key, None):
            found = armed.get(owner)
            if found is not None and found.take(placement):
                return found
        return None

    def _keys(self, api_key: str | None, listen_key: str | None) -> set[str] | None:
        if listen_key:
            return {listen_key}
        return self.engine.listen_keys_of(api_key) if api_key else None

    def _silenced(self, listen_key: str | None) -> set[str]:
        return self.silenced_keys if listen_key else self.silenced_accounts

    @staticmethod
    def _target(api_key: str | None, listen_key: str | None) -> str:
        target = listen_key or api_key
        if not target:
            raise ValueError("api_key or listen_key is required")
        return target
