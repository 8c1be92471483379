"""listenKeys: one per account, valid for a fixed time, extended by POST/PUT (reference §3.1)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from tradewire.simulator import errors as err
from tradewire.simulator.model import random_token

LISTEN_KEY_TTL_MS = 60 * 60 * 1000


@dataclass
class _Key:
    value: str
    api_key: str
    expires_at: int


class ListenKeys:
    """The listenKey registry. Time comes in as ``now`` (ms); nothing here reads a clock."""

    def __init__(self, ttl_ms: int = LISTEN_KEY_TTL_MS) -> None:
        self.ttl_ms = ttl_ms
        self._active: dict[str, _Key] = {}  # api_key -> its live key
        self._owners: dict[str, str] = {}  # every key ever issued -> api_key
        self._due: list[tuple[int, str, str]] = []  # (expires_at, api_key, key): a lazy heap
        self._version = 0  # bumped whenever ``_active`` gains, loses or replaces a key
        self._holders: tuple[int, int, list[str]] | None = None  # (version, valid until, list)

    def start(self, api_key: str, now: int) -> str:
        """POST: the active key extended, or a new one."""
        live = self._live(api_key, now)
        if live is None:
            live = _Key(random_token(64), api_key, 0)
            self._active[api_key] = live
            self._version += 1
            self._owners[live.value] = api_key
        self._extend(live, now)
        return live.value

    def keepalive(self, api_key: str, now: int) -> str:
        """PUT: extend the active key; -1125 when there is none."""
        live = self._live(api_key, now)
        if live is None:
            raise err.reject(err.LISTEN_KEY_MISSING)
        self._extend(live, now)
        return live.value

    def close(self, api_key: str) -> None:
        """DELETE: the key stops working at once."""
        if self._active.pop(api_key, None) is not None:
            self._version += 1

    def active(self, api_key: str, now: int) -> str | None:
        live = self._live(api_key, now)
        return live.value if live else None

    def expire_due(self, now: int) -> list[tuple[str, str]]:
        """Drop keys whose time has come; ``(api_key, listen_key)`` of each. Cost: only the
        keys due (a heap of expiry times; entries made stale by a keepalive are skipped)."""
        expired = []
        while self._due and self._due[0][0] <= now:
            at, api_key, value = heapq.heappop(self._due)
            live = self._active.get(api_key)
            if live is not None and live.value == value and live.expires_at == at:
                del self._active[api_key]
                self._version += 1
                expired.append((api_key, value))
        return expired

    def holders(self, now: int) -> list[str]:
        """API keys with a live listenKey, in the order their keys were issued. The list is
        shared (do not change it): it is rebuilt only when a key is issued, closed or expired,
        or when ``now`` reaches the earliest expiry it was built with (an extension only moves
        expiries later). The load generator asks for it once per emitted batch, up to 1,000
        times a second: walking 5,000 keys each time took ~17 % of the simulator's CPU."""
        cached = self._holders
        if cached is not None and cached[0] == self._version and now < cached[1]:
            return cached[2]
        found: list[str] = []
        until = 2**63
        for api_key, key in self._active.items():
            if key.expires_at > now:
                found.append(api_key)
                until = min(until, key.expires_at)
        self._holders = (self._version, until, found)
        return found

    def owner(self, listen_key: str) -> str | None:
        return self._owners.get(listen_key)

    def issued_to(self, api_key: str) -> set[str]:
        return {key for key, owner in self._owners.items() if owner == api_key}

    def _extend(self, key: _Key, now: int) -> None:
        key.expires_at = now + self.ttl_ms
        heapq.heappush(self._due, (key.expires_at, key.api_key, key.value))

    def _live(self, api_key: str, now: int) -> _Key | None:
        key = self._active.get(api_key)
        return key if key is not None and key.expires_at > now else None
