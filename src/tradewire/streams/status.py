"""What the manager reports: per-account status, the ``status()`` snapshot, metrics.

Read-only over the manager's state, for tests, the metrics exporter and the bench: "every
account streams" is ``status()["streaming"] == status()["wanted"]`` (metrics
``tradewire_stream_accounts_streaming`` and ``tradewire_stream_accounts_wanted``). An account
*streams* when its current key is confirmed on an open socket (one-socket mode: its socket is
connected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from tradewire import metrics
from tradewire.streams.state import Account, AccountState, StreamsCore

EXPORT_CHUNK = 100  # accounts counted between two yields (500: ~1 ms, a publish-latency stall)


class _Tally:
    """Accounts per state and how many stream, counted over any number of slices."""

    def __init__(self) -> None:
        self.states = {state.value: 0 for state in AccountState}
        self.streaming = 0

    def add(self, accounts: Iterable[Account]) -> None:
        # ``_is_streaming`` inlined (this runs over every account each second), each group's
        # socket looked at once per slice (a StrEnum member is its value as a dict key)
        states, blind_state = self.states, AccountState.BLIND
        carried: dict[int, set[str] | None] = {}  # id(group) -> keys confirmed on its socket
        streaming = 0
        for account in accounts:
            states[blind_state if account.blind else account.state] += 1
            key, group = account.key, account.group
            if key is None or group is None or account.rekey:
                continue
            if id(group) in carried:
                confirmed = carried[id(group)]
            else:
                conn = group.conn
                confirmed = carried[id(group)] = (conn.confirmed_keys
                                                  if conn is not None and conn.is_open else None)
            if confirmed is not None and key in confirmed:
                streaming += 1
        self.streaming += streaming


class StatusView(StreamsCore):
    """Snapshots of the manager's state (module docstring)."""

    def _is_streaming(self, account_id: int) -> bool:
        single = self._singles.get(account_id)
        if single is not None:
            return single.stream.connected.is_set()
        account = self.accounts.get(account_id)
        if account is None or account.key is None or account.group is None or account.rekey:
            return False
        conn = account.group.conn
        return conn is not None and conn.is_open and conn.carries(account.key)

    def account_status(self, account_id: int) -> dict[str, Any] | None:
        """One account: its state, whether it streams, the age of its last event (clock ms;
        None: none seen yet), its connection."""
        account = self.accounts.get(account_id)
        single = self._singles.get(account_id)
        if account is None and single is None:
            return None
        last = self.activity.get(account_id)
        age = None if last is None else self._clock.now_ms() - last
        if account is None:
            return {"state": AccountState.STREAMING.value if self._is_streaming(account_id)
                    else AccountState.KEYED.value, "streaming": self._is_streaming(account_id),
                    "last_event_age_ms": None, "connection": None, "blind": False}
        conn = account.group.conn if account.group is not None else None
        return {
            "state": (AccountState.BLIND if account.blind else account.state).value,
            "streaming": self._is_streaming(account_id),
            "last_event_age_ms": age,
            "connection": conn.id if conn is not None else None,
            "blind": account.blind,
        }

    def _stream_count(self) -> int:
        return len(self.accounts) + len(self._singles)

    def status(self) -> dict[str, Any]:
        """A snapshot: accounts per state, connections, keys per connection, blind accounts,
        owned shards. ``streaming == wanted``: every account this pod owns is subscribed."""
        tally = _Tally()
        tally.add(self.accounts.values())
        return self._snapshot(tally)

    async def export_metrics(self) -> dict[str, Any]:
        """``status()`` into the gauges, counted ``EXPORT_CHUNK`` accounts at a time with the
        event loop free in between: one pass over 5,000 accounts took ~5 ms, a stall of every
        socket reader each second (counts are therefore of a moment within the pass)."""
        tally = _Tally()
        accounts = list(self.accounts.values())
        for at in range(0, len(accounts), EXPORT_CHUNK):
            if at:
                await asyncio.sleep(0)
            tally.add(accounts[at:at + EXPORT_CHUNK])
        status = self._snapshot(tally)
        metrics.STREAM_CONNECTIONS.set(status["connections"])
        keys: list[int] = status["keys_per_connection"]
        metrics.STREAM_KEYS_PER_CONNECTION.labels(stat="max").set(max(keys, default=0))
        metrics.STREAM_KEYS_PER_CONNECTION.labels(stat="mean").set(
            sum(keys) / len(keys) if keys else 0)
        for state, count in status["states"].items():
            metrics.STREAM_ACCOUNTS.labels(state=state).set(count)
        metrics.STREAM_WANTED.set(status["wanted"])
        metrics.STREAM_STREAMING.set(status["streaming"])
        metrics.STREAM_BLIND.set(status["blind"])
        metrics.STREAM_OWNED_SHARDS.set(status["owned_shards"])
        return status

    def _snapshot(self, tally: _Tally) -> dict[str, Any]:
        states, streaming = tally.states, tally.streaming
        for account_id in self._singles:
            up = self._is_streaming(account_id)
            states[(AccountState.STREAMING if up else AccountState.KEYED).value] += 1
            streaming += up
        if self.single_socket_mode:
            keys = [1 for single in self._singles.values() if single.stream.connected.is_set()]
        else:
            keys = sorted((g.conn.subscribed for g in self.groups.values()
                           if g.conn is not None and g.conn.is_open), reverse=True)
        owned = self._owned
        return {
            "mode": "single" if self.single_socket_mode else "mux",
            "wanted": self._stream_count(),
            "streaming": streaming,
            "states": states,
            "blind": states[AccountState.BLIND.value],
            "connections": len(keys),
            "keys_per_connection": keys,
            "owned_shards": self.shards.shards if owned is None else len(owned),
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "rekeys": self.rekeys,
            "keepalives": self.keepalives,
            "listenkey_posts": self.listenkey_posts,
            "reconciliations": self.reconciliations,
            "synthetic_events": self.synthetic_events,
            "repair_failures": self.repair_failures,
        }

    async def wait_streaming(self, timeout_s: float = 10.0, *,
                             at_least: int = 0) -> dict[str, Any]:
        """Until the listing is loaded and every wanted account streams (tests, demo)."""
        async with asyncio.timeout(timeout_s):
            while True:
                status = self.status()
                if (self._listing is not None and status["streaming"] == status["wanted"]
                        and status["wanted"] >= at_least):
                    return status
                await asyncio.sleep(0.02)
