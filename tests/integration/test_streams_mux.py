"""The many-account streams manager against a real simulator: few ``/private/stream`` sockets,
listenKey lifecycles, rotation, reconnect storms, liveness, shards.

The simulator and the manager share one ``ManualClock``: listenKey expiry, keepalive due times,
connection age and blindness are driven by ``/sim/clock/advance``, never by waiting. Events are
produced with ``/sim/bench/emit`` (one balance ``ACCOUNT_UPDATE`` per listening account per
round; the clock moves 1 ms between rounds so every event id is distinct) and read back from a
real ``EmbeddedBus``. Reconciliation is a recording stand-in here (what it synthesises is tested
in ``test_reconcile.py``): these tests check that the manager asks for it after each gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import httpx
import pytest
from tests import polling

from tradewire import metrics
from tradewire.bus.base import Envelope, Message
from tradewire.bus.embedded import EmbeddedBus
from tradewire.clock import ManualClock
from tradewire.exchange.client import ExchangeClient
from tradewire.simulator import Engine, SimulatorServer
from tradewire.simulator.app import create_app
from tradewire.simulator.streams import StreamConfig
from tradewire.streams.connection import ControlRefused, MuxConnection
from tradewire.streams.directory import AccountSpec
from tradewire.streams.manager import StreamsManager
from tradewire.streams.options import StreamOptions
from tradewire.streams.publisher import BatchPublisher
from tradewire.streams.session import AccountRef
from tradewire.streams.shards import shard_of

pytestmark = pytest.mark.timeout(60)

MINUTE_MS = 60_000
FAR = 10**9  # seconds: "never" for the clock-driven checks a test does not exercise


class Directory:
    """An in-memory ``AccountDirectory``: what the database would list."""

    def __init__(self) -> None:
        self.specs: dict[int, AccountSpec] = {}
        self.clients: dict[int, ExchangeClient] = {}
        self.decrypted: Counter[int] = Counter()

    async def listing(self) -> list[AccountSpec]:
        return list(self.specs.values())

    async def aclose(self) -> None:
        return None

    def client(self, spec: AccountSpec) -> ExchangeClient:
        self.decrypted[spec.account_id] += 1
        return self.clients[spec.account_id]


class Recorder:
    """A ``Reconciler`` stand-in: records who was reconciled, synthesises one raw event."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()

    async def reconcile(self, account: AccountRef, client: ExchangeClient) -> list[dict[str, Any]]:
        self.calls[account.account_id] += 1
        return [{"e": "RECONCILED", "n": self.calls[account.account_id], "synthetic": True}]


class Shards:
    """Shard ownership a test moves by hand."""

    def __init__(self, owned: Collection[int], shards: int = 4) -> None:
        self.member = "test"
        self.shards = shards
        self.owned_now: set[int] = set(owned)
        self.draining_now: dict[int, float] = {}
        self.ready: list[int] = []
        self.elsewhere: set[int] = set()
        self.epochs: dict[int, int] = {}  # default 1
        self.keying_s: float | None = None  # the manager's last ``expect_keying``

    def owned(self) -> Collection[int] | None:
        return frozenset(self.owned_now)

    def epoch(self, shard: int) -> int | None:
        return self.epochs.get(shard, 1) if shard in self.owned_now else None

    def draining(self) -> dict[int, float]:
        return dict(self.draining_now)

    def ready_elsewhere(self, shard: int) -> bool:
        return shard in self.elsewhere

    def expect_keying(self, seconds: float) -> None:
        self.keying_s = seconds

    async def mark_ready(self, shard: int) -> None:
        self.ready.append(shard)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Harness:
    def __init__(self, sim: SimulatorServer, http: httpx.AsyncClient, clock: ManualClock) -> None:
        self.sim, self.http, self.clock = sim, http, clock
        self.bus = EmbeddedBus()
        self.directory = Directory()
        self.reconciler = Recorder()
        self.timer = metrics.PublishTimer()
        self.api_keys: dict[int, str] = {}
        self.manager: StreamsManager | None = None
        self._next_id = 100
        self.seen: list[Envelope] = []

    async def admin(self, path: str, **body: Any) -> Any:
        response = await self.http.post(f"{self.sim.base_url}{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def add_accounts(self, count: int, *, listed: bool = True) -> list[int]:
        ids = []
        for _ in range(count):
            creds = await self.admin("/sim/accounts", balance="1000")
            self._next_id += 1
            account_id = self._next_id
            self.api_keys[account_id] = creds["api_key"]
            self.directory.clients[account_id] = ExchangeClient(
                self.sim.base_url, creds["api_key"], creds["api_secret"], http=self.http,
                clock=self.clock)
            if listed:
                self.list(account_id)
            ids.append(account_id)
        return ids

    def list(self, account_id: int) -> None:
        self.directory.specs[account_id] = AccountSpec(account_id, account_id + 1000, "v1")

    def unlist(self, account_id: int) -> None:
        self.directory.specs.pop(account_id, None)

    @contextlib.asynccontextmanager
    async def running(self, shards: Any = None, **options: Any) -> AsyncIterator[StreamsManager]:
        manager, stop, task = self.start(shards, **options)
        try:
            yield manager
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    def start(self, shards: Any = None, **options: Any
              ) -> tuple[StreamsManager, asyncio.Event, asyncio.Task[None]]:
        defaults: dict[str, Any] = {
            "keys_per_connection": 10, "control_msgs_per_s": 8.0, "tick_s": 0.02,
            "refresh_s": 0.05, "blind_after_s": FAR, "audit_interval_s": FAR,
            "keepalive_max_per_s": 1000.0, "handoff_timeout_s": 1.0,
        }
        defaults.update(options)
        publisher = BatchPublisher(self.timer.wrap(self.bus.publish_many))
        manager = StreamsManager(
            self.directory, publisher, self.sim.ws_url, self.clock,
            options=StreamOptions(**defaults), shards=shards, reconciler=self.reconciler,
            timer=self.timer)
        self.manager = manager
        stop = asyncio.Event()
        return manager, stop, asyncio.create_task(manager.run(stop))

    async def advance(self, ms: int) -> None:
        await self.admin("/sim/clock/advance", ms=ms)

    async def account(self, account_id: int) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.sim.base_url}/sim/accounts/{self.api_keys[account_id]}")
        body: dict[str, Any] = response.json()
        return body

    async def listening(self, account_id: int) -> int:
        return int((await self.account(account_id))["listening"])

    async def emit_round(self) -> int:
        """One event per account holding a live listenKey; the clock moves 1 ms first."""
        self.clock.advance(1)
        holders = len(self.sim.engine._core.keys.holders(self.clock.now_ms()))
        answer = await self.admin("/sim/bench/emit", count=holders)
        return int(answer["emitted"])

    async def take(self, count: int, timeout_s: float = 10.0) -> list[Envelope]:
        """The next ``count`` envelopes on the bus."""
        messages: list[Message] = []
        async with asyncio.timeout(timeout_s):
            while len(messages) < count:
                messages += await self.bus.fetch("test", count - len(messages), 50)
        for message in messages:
            await self.bus.ack(message)
        envelopes = [Envelope.decode(message.body) for message in messages]
        self.seen += envelopes
        return envelopes

    async def drain(self, quiet_ms: int = 300) -> list[Envelope]:
        """Everything on the bus until nothing came for ``quiet_ms``."""
        out: list[Envelope] = []
        while True:
            messages = await self.bus.fetch("test", 500, quiet_ms)
            if not messages:
                self.seen += out
                return out
            for message in messages:
                await self.bus.ack(message)
                out.append(Envelope.decode(message.body))

    async def events_of_round(self, accounts: Collection[int]) -> list[Envelope]:
        """Emit a round and take the stream events (not synthetic) of ``accounts``."""
        emitted = await self.emit_round()
        assert emitted >= len(accounts)
        wanted = set(accounts)
        got: list[Envelope] = []
        async with asyncio.timeout(10):
            while {e.account_id for e in got} != wanted:
                got += [e for e in await self.take(1) if not e.synthetic
                        and e.event["e"] == "ACCOUNT_UPDATE" and e.account_id in wanted]
        return got


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_harness_fixture(**stream_config: Any) -> Callable[..., Any]:
    async def fixture(clock: ManualClock) -> AsyncIterator[Harness]:
        app = create_app(Engine(clock), streams=StreamConfig(**stream_config))
        sim = SimulatorServer(app=app)
        async with sim, httpx.AsyncClient(timeout=5) as http:
            yield Harness(sim, http, clock)

    return fixture


harness = pytest.fixture(name="harness")(make_harness_fixture())
small_budget = pytest.fixture(name="small_budget")(
    make_harness_fixture(connection_attempts_per_ip=12))


until = functools.partial(polling.until, timeout_s=10.0)


def mux_sockets(h: Harness) -> int:
    return len(h.sim.runtime.hub.sessions)


# --- packing and delivery ----------------------------------------------------------------------


async def test_thirty_accounts_share_three_sockets_and_every_event_reaches_the_bus(
    harness: Harness
) -> None:
    """With ten keys per connection, thirty accounts stream on three sockets, each key
    subscribed once; one event per account reaches the bus once, named for its account."""
    ids = await harness.add_accounts(30)
    timed_before = _sample("tradewire_stream_publish_seconds_count")
    async with harness.running() as manager:
        status = await manager.wait_streaming(15, at_least=30)
        assert status["connections"] == 3
        assert status["keys_per_connection"] == [10, 10, 10]
        assert mux_sockets(harness) == 3
        for account_id in ids:
            assert await harness.listening(account_id) == 1
        got = await harness.events_of_round(ids)
        await harness.drain()

    assert sorted(e.account_id for e in got) == sorted(ids)
    assert {e.user_id - e.account_id for e in got} == {1000}
    assert all(e.event_id.startswith(f"{e.account_id}:acct:") for e in got)
    assert harness.directory.decrypted == Counter({account_id: 1 for account_id in ids})
    assert sorted(harness.reconciler.calls) == sorted(ids)  # start-up: each once
    synthetic = [e for e in harness.seen if e.synthetic]
    assert {e.account_id for e in synthetic} == set(ids) and len(synthetic) == 30
    assert status["states"]["streaming"] == 30 and status["blind"] == 0
    # socket receipt -> bus ack timed for every stream event (not for synthetic ones)
    assert _sample("tradewire_stream_publish_seconds_count") - timed_before == len(
        [e for e in harness.seen if not e.synthetic])
    await manager.export_metrics()
    assert _sample("tradewire_stream_connections") == 0  # closed by now
    assert _sample("tradewire_stream_accounts_wanted") == 0


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_accounts_added_and_disabled_take_effect_within_seconds(harness: Harness) -> None:
    """An account listed while running streams within seconds, one delisted stops at once
    (its key unsubscribed, the socket kept for the others); nothing is decrypted twice."""
    first, second = await harness.add_accounts(2)
    [late] = await harness.add_accounts(1, listed=False)
    async with harness.running() as manager:
        await manager.wait_streaming(10, at_least=2)
        harness.list(late)
        await manager.wait_streaming(3, at_least=3)
        assert await harness.listening(late) == 1
        harness.unlist(first)
        await until(lambda: manager.status()["wanted"] == 2, 3)
        await until(lambda: _is(harness, first, 0), 3)
        assert await harness.listening(second) == 1
        assert manager.status()["connections"] == 1
        got = await harness.events_of_round([second, late])
    assert {e.account_id for e in got} == {second, late}
    assert max(harness.directory.decrypted.values()) == 1


async def _is(h: Harness, account_id: int, listening: int) -> bool:
    return await h.listening(account_id) == listening


# --- listenKeys --------------------------------------------------------------------------------


async def test_an_expired_listen_key_is_replaced_resubscribed_and_reconciled(
    harness: Harness
) -> None:
    """An hour without keepalive: each account's ``listenKeyExpired`` is published, a new key
    is POSTed and subscribed on the same socket (the old one unsubscribed), the account is
    reconciled again and its events flow."""
    ids = await harness.add_accounts(3)
    async with harness.running() as manager:
        await manager.wait_streaming(10, at_least=3)
        old = {i: (await harness.account(i))["listen_key"] for i in ids}
        await harness.advance(60 * MINUTE_MS + 1)
        await until(lambda: manager.status()["rekeys"] == 3)
        await manager.wait_streaming(10, at_least=3)
        for account_id in ids:
            account = await harness.account(account_id)
            assert account["listen_key"] != old[account_id] and account["listening"] == 1
        got = await harness.events_of_round(ids)
        assert manager.status()["connections"] == 1
        [session] = list(harness.sim.runtime.hub.sessions)
        await until(lambda: not set(old.values()) & set(session.filters))  # unsubscribed
    expired = [e for e in harness.seen if e.event["e"] == "listenKeyExpired"]
    assert sorted(e.account_id for e in expired) == sorted(ids)
    assert {e.account_id for e in got} == set(ids)
    assert harness.reconciler.calls == Counter({i: 2 for i in ids})  # start-up + gap


async def test_keepalives_keep_keys_alive_past_the_hour(harness: Harness) -> None:
    """PUTs every 30 minutes (clock) keep the first keys: no expiry, no re-key after 70 min."""
    ids = await harness.add_accounts(3)
    async with harness.running(keepalive_interval_s=1800) as manager:
        await manager.wait_streaming(10, at_least=3)
        keys = {i: (await harness.account(i))["listen_key"] for i in ids}
        for _ in range(7):
            await harness.advance(10 * MINUTE_MS)
            await asyncio.sleep(0.1)
            await until(lambda: not any(a.put_busy for a in manager.accounts.values()))
        assert manager.status()["keepalives"] >= 6
        got = await harness.events_of_round(ids)
        status = manager.status()
    assert {e.account_id for e in got} == set(ids)
    assert status["rekeys"] == 0 and status["listenkey_posts"] == 3
    for account_id in ids:
        assert (await harness.account(account_id))["listen_key"] == keys[account_id]
    assert not [e for e in harness.seen if e.event["e"] == "listenKeyExpired"]


async def test_a_refused_keepalive_re_keys_the_account(harness: Harness) -> None:
    """A PUT answered -1125 (the key was deleted behind the manager's back) leads to a new
    key, subscribed, reconciled, and events flow on it."""
    [account_id, other] = await harness.add_accounts(2)
    async with harness.running(keepalive_interval_s=1800) as manager:
        await manager.wait_streaming(10, at_least=2)
        old = (await harness.account(account_id))["listen_key"]
        await harness.directory.clients[account_id].close_listen_key()
        await harness.advance(31 * MINUTE_MS)
        await until(lambda: manager.status()["rekeys"] == 1)
        await manager.wait_streaming(10, at_least=2)
        account = await harness.account(account_id)
        assert account["listen_key"] not in (None, old) and account["listening"] == 1
        got = await harness.events_of_round([account_id, other])
    assert {e.account_id for e in got} == {account_id, other}
    assert harness.reconciler.calls == Counter({account_id: 2, other: 1})


# --- connections -------------------------------------------------------------------------------


async def test_rotation_before_the_cut_loses_nothing_and_doubles_nothing(
    harness: Harness
) -> None:
    """A socket older than the maximum age is replaced by a new one subscribed to the same keys
    before the old one closes: of events emitted all through the rotation none is missing, and
    each event id is one event (duplicates from the overlap share their id)."""
    ids = await harness.add_accounts(10)
    emitted = 0
    async with harness.running(connection_max_age_s=1800) as manager:
        await manager.wait_streaming(10, at_least=10)
        [before] = list(harness.sim.runtime.hub.sessions)
        emitted += await harness.emit_round()
        harness.clock.advance(31 * MINUTE_MS)
        while manager.status()["rotations"] < 1 or mux_sockets(harness) != 1:
            emitted += await harness.emit_round()
            await asyncio.sleep(0.01)
        for _ in range(5):
            emitted += await harness.emit_round()
        got = [e for e in await harness.drain(500) if not e.synthetic]
        [after] = list(harness.sim.runtime.hub.sessions)
        status = manager.status()
    ids_seen = Counter(e.event_id for e in got)
    assert len(ids_seen) == emitted  # every emitted event, once as an id
    assert {e.account_id for e in got} == set(ids)
    assert before is not after and status["reconnects"] == 0 and status["rotations"] == 1
    assert harness.reconciler.calls == Counter({i: 1 for i in ids})  # no gap: no reconcile


async def test_a_dropped_socket_is_reopened_resubscribed_and_reconciled(harness: Harness) -> None:
    """The exchange closes every socket: the manager reopens them, resubscribes every key and
    reconciles every account of the dropped sockets; events flow again."""
    ids = await harness.add_accounts(4)
    async with harness.running(keys_per_connection=2) as manager:
        await manager.wait_streaming(10, at_least=4)
        assert await harness.admin("/sim/faults/drop-connections") == {"dropped": 2}
        await until(lambda: manager.status()["reconnects"] == 2)
        await manager.wait_streaming(10, at_least=4)
        got = await harness.events_of_round(ids)
    assert {e.account_id for e in got} == set(ids)
    assert harness.reconciler.calls == Counter({i: 2 for i in ids})


async def test_a_reconnect_storm_stays_within_the_connection_budget(
    small_budget: Harness
) -> None:
    """Dropping every socket again and again: the manager never opens more sockets than its
    budget allows in the window (the simulator, allowing a few more, never refuses one); once
    the budget is spent the accounts wait instead of hammering the exchange."""
    h = small_budget
    await h.add_accounts(4)
    async with h.running(keys_per_connection=2, connect_attempts=8,
                         connect_window_s=300) as manager:
        await manager.wait_streaming(10, at_least=4)
        for round_ in range(1, 4):
            await h.admin("/sim/faults/drop-connections")
            await until(lambda r=round_: manager.status()["reconnects"] == 2 * r)
            await manager.wait_streaming(10, at_least=4)
        await h.admin("/sim/faults/drop-connections")
        await asyncio.sleep(1.0)
        status = manager.status()
        attempts = manager._conn_ids
    assert attempts == 8
    assert status["connections"] == 0 and status["streaming"] == 0
    budget = h.sim.runtime.connections
    assert budget.retry_after_ms("127.0.0.1", h.clock.now_ms()) == 0  # never at its limit


# --- liveness ----------------------------------------------------------------------------------


async def test_a_blind_socket_is_reopened_and_a_failed_repair_is_an_error(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Events silenced (pings rare): after ``blind_after_s`` without a frame the accounts are
    blind, the socket is reopened and the accounts reconciled; when events come back they
    flow. Still silent after the repair: an ERROR naming user and account."""
    ids = await harness.add_accounts(2)
    async with harness.running(blind_after_s=60) as manager:
        await manager.wait_streaming(10, at_least=2)
        for account_id in ids:
            await harness.admin("/sim/faults/silence", api_key=harness.api_keys[account_id])
        await harness.advance(61_000)
        await until(lambda: manager.status()["reconnects"] == 1)
        await manager.wait_streaming(10, at_least=2)
        assert manager.status()["blind"] == 2  # until the new socket delivers something
        assert manager.account_status(ids[0])["state"] == "blind"  # type: ignore[index]
        await harness.admin("/sim/faults/clear")
        got = await harness.events_of_round(ids)
        assert {e.account_id for e in got} == set(ids)
        await until(lambda: manager.status()["blind"] == 0)
        assert manager.account_status(ids[0])["last_event_age_ms"] == 0  # type: ignore[index]
        assert harness.reconciler.calls == Counter({i: 2 for i in ids})

        for account_id in ids:
            await harness.admin("/sim/faults/silence", api_key=harness.api_keys[account_id])
        with caplog.at_level(logging.ERROR, logger="tradewire.streams"):
            await harness.advance(61_000)
            await until(lambda: manager.status()["reconnects"] == 2)
            await harness.advance(61_000)
            await until(lambda: manager.status()["reconnects"] == 3)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR
              and "still blind" in r.getMessage()]
    blind = {(r.fields["userId"], r.fields["accountId"]) for r in errors}  # type: ignore[attr-defined]
    assert blind >= {(i + 1000, i) for i in ids}, caplog.text
    assert all("no frame" in r.fields["error"] for r in errors)  # type: ignore[attr-defined]
    assert manager.status()["repair_failures"] >= 2


async def test_a_key_missing_from_the_subscriptions_is_repaired(harness: Harness) -> None:
    """The audit (LIST_SUBSCRIPTIONS) finds a key the exchange dropped from the socket: the
    account is re-keyed, subscribed again and reconciled."""
    ids = await harness.add_accounts(2)
    async with harness.running(audit_interval_s=300) as manager:
        await manager.wait_streaming(10, at_least=2)
        [session] = list(harness.sim.runtime.hub.sessions)
        key = (await harness.account(ids[0]))["listen_key"]
        harness.sim.runtime.hub.unsubscribe(session, key)
        assert await harness.listening(ids[0]) == 0
        await harness.advance(301_000)
        await until(lambda: _is(harness, ids[0], 1))
        await manager.wait_streaming(10, at_least=2)
        got = await harness.events_of_round(ids)
    assert {e.account_id for e in got} == set(ids)
    assert harness.reconciler.calls[ids[0]] == 2 and harness.reconciler.calls[ids[1]] == 1


# --- shards ------------------------------------------------------------------------------------


async def test_shards_decide_which_accounts_stream_and_a_lost_shard_closes_at_once(
    harness: Harness
) -> None:
    """Only accounts of owned shards stream; every owned shard is marked ready once its
    accounts stream, and again when it is held under a new epoch (lost and re-acquired between
    two ticks); a lost shard's accounts are unsubscribed at once; a draining shard's accounts
    stay until the new owner is ready. The manager tells the shards how long a new owner may
    need to key its accounts (60 s per started IP-weight minute of listenKey POSTs)."""
    ids = await harness.add_accounts(12)
    by_shard: dict[int, list[int]] = {}
    for account_id in ids:
        by_shard.setdefault(shard_of(account_id, 4), []).append(account_id)
    shards = sorted(by_shard)
    assert len(shards) >= 3, by_shard
    lost, handed, kept = shards[0], shards[1], shards[2:]
    owned = [lost, handed, *kept]
    shard_set = Shards(owned, shards=4)
    async with harness.running(shards=shard_set, stream_shards=4,
                               ip_weight_per_minute=4) as manager:
        expected = sum(len(by_shard[s]) for s in owned)
        await manager.wait_streaming(10, at_least=expected)
        await until(lambda: sorted(shard_set.ready) == sorted(owned))
        assert shard_set.keying_s == 60.0 * -(-expected // 4) == manager.keying_estimate_s()
        assert manager.status()["owned_shards"] == len(owned)
        shard_set.epochs[kept[0]] = 2  # same owned() set, new hold
        await until(lambda: shard_set.ready.count(kept[0]) == 2, 2)
        assert len(shard_set.ready) == len(owned) + 1

        shard_set.owned_now.discard(lost)
        await until(lambda: manager.status()["wanted"] == expected - len(by_shard[lost]), 2)
        for account_id in by_shard[lost]:
            await until(lambda a=account_id: _is(harness, a, 0), 2)

        shard_set.owned_now.discard(handed)
        shard_set.draining_now[handed] = asyncio.get_running_loop().time() + 30
        await asyncio.sleep(0.3)
        for account_id in by_shard[handed]:
            assert await harness.listening(account_id) == 1  # kept while draining
        shard_set.elsewhere.add(handed)
        for account_id in by_shard[handed]:
            await until(lambda a=account_id: _is(harness, a, 0), 2)
        for shard in kept:
            for account_id in by_shard[shard]:
                assert await harness.listening(account_id) == 1
        shard_set.draining_now.clear()  # nothing left to hand over: the stop need not wait


# --- the one-socket-per-account mode -----------------------------------------------------------


async def test_one_socket_per_account_mode_still_works(harness: Harness) -> None:
    """``keys_per_connection = 1``: one raw socket per account, events reach the bus."""
    ids = await harness.add_accounts(2)
    async with harness.running(keys_per_connection=1) as manager:
        status = await manager.wait_streaming(10, at_least=2)
        assert status["mode"] == "single" and status["connections"] == 2
        got = await harness.events_of_round(ids)
    assert {e.account_id for e in got} == set(ids)


# --- the connection itself ---------------------------------------------------------------------


few_streams = pytest.fixture(name="few_streams")(
    make_harness_fixture(max_streams_per_connection=10))


async def test_a_connection_subscribes_in_paced_batches_confirmed_by_id(
    few_streams: Harness
) -> None:
    """Twelve keys queued at once leave as three SUBSCRIBE messages of at most five keys,
    each confirmed by its reply; LIST_SUBSCRIPTIONS shows them; UNSUBSCRIBE removes keys; a
    SUBSCRIBE the exchange refuses (over its streams limit) fails its keys and leaves the
    socket open."""
    h = few_streams
    sink = Collect()
    conn = MuxConnection(1, h.sim.ws_url, sink, h.clock, subscribe_batch=5,
                         control_msgs_per_s=9)
    await conn.open()
    try:
        keys = [f"k{i:02d}" for i in range(12)]
        waits = [conn.subscribe(key, AccountRef(i, 100 + i)) for i, key in enumerate(keys)]
        results = await asyncio.gather(*waits, return_exceptions=True)
        refused = [k for k, r in zip(keys, results, strict=True) if isinstance(r, ControlRefused)]
        assert refused == keys[10:]  # the third batch would pass 10 streams: refused whole
        assert results[:10] == [None] * 10
    except BaseException:
        await conn.close()
        raise
    assert conn.control_sent == 3 and conn.is_open
    assert await conn.list_subscriptions() == set(keys[:10])
    assert all(conn.carries(k) for k in keys[:10]) and not conn.carries(keys[10])
    conn.unsubscribe(keys[0])
    conn.unsubscribe(keys[1])
    await until(lambda: len(next(iter(h.sim.runtime.hub.sessions)).filters) == 8, 5)
    assert await conn.list_subscriptions() == set(keys[2:10])
    await conn.subscribe(keys[10], AccountRef(10, 110))  # room again: accepted
    assert conn.carries(keys[10]) and conn.is_open
    await conn.close()
    assert conn.closed and conn.retiring and sink.envelopes == []


async def test_control_messages_stay_under_the_exchange_rate_limit(harness: Harness) -> None:
    """Twelve SUBSCRIBE messages queued at once (the simulator closes a socket sending more
    than ten messages in a second) leave paced: the socket stays open, all keys confirmed."""
    conn = MuxConnection(1, harness.sim.ws_url, Collect(), harness.clock, subscribe_batch=2,
                         control_msgs_per_s=9)
    await conn.open()
    try:
        keys = [f"k{i:02d}" for i in range(24)]
        await asyncio.gather(*(conn.subscribe(k, AccountRef(i, i)) for i, k in enumerate(keys)))
        assert conn.is_open and conn.control_sent == 12
        assert await conn.list_subscriptions() == set(keys)
    finally:
        await conn.close()


class Collect:
    """A connection's sink that keeps every envelope and is never full."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def offer(self, envelope: Envelope) -> bool:
        self.envelopes.append(envelope)
        return True

    async def room(self) -> None:
        return None


# --- two pods over Redis shards ----------------------------------------------------------------

REDIS_DB = 4  # this test's own database (flushed first)


@pytest.fixture
async def shards_url(redis_url: str) -> AsyncIterator[str]:
    from urllib.parse import urlsplit, urlunsplit

    from redis.asyncio import Redis

    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{REDIS_DB}"))
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return url


async def test_a_pod_joining_and_a_pod_leaving_hand_accounts_over_without_a_gap(
    harness: Harness, shards_url: str
) -> None:
    """Pod A streams every account; pod B joins and takes about half the shards, pod A keeps
    their sockets until B reports them streaming; A stops gracefully and B takes the rest the
    same way. Sampled all along, no account is ever without a socket on its key."""
    from tradewire.streams.shards_redis import RedisShards

    ids = await harness.add_accounts(12)
    hub = harness.sim.runtime.hub
    gaps: list[int] = []

    async def watch(keys: dict[int, str]) -> None:
        while True:
            gaps.extend(a for a, key in keys.items() if hub.listeners(key) == 0)
            await asyncio.sleep(0.005)

    def pod(member: str, handoff_timeout_s: float = 20) -> RedisShards:
        return RedisShards(shards_url, member, 8, ttl_s=1.5, renew_s=0.5, ready_poll_s=0.05,
                           handoff_timeout_s=handoff_timeout_s)

    a, stop_a, task_a = harness.start(pod("pod-a"), stream_shards=8, handoff_timeout_s=20)
    b, stop_b, task_b = None, asyncio.Event(), None
    watcher = None
    try:
        await a.wait_streaming(10, at_least=12)
        keys = {i: (await harness.account(i))["listen_key"] for i in ids}
        watcher = asyncio.create_task(watch(keys))

        # B stops last, with nobody to hand over to: a short drain
        b, stop_b, task_b = harness.start(pod("pod-b", 0.5), stream_shards=8,
                                          handoff_timeout_s=0.5)
        await until(lambda: b.status()["wanted"] > 0
                    and a.status()["wanted"] + b.status()["wanted"] == 12, 20)
        await b.wait_streaming(10)
        moved = b.status()["wanted"]
        assert 0 < moved < 12
        await harness.drain(200)
        got = await harness.events_of_round(ids)
        assert {e.account_id for e in got} == set(ids)

        stop_a.set()  # A leaves gracefully: B takes the rest before A's sockets close
        await asyncio.wait_for(task_a, 30)
        await b.wait_streaming(10, at_least=12)
        got = await harness.events_of_round(ids)
        assert {e.account_id for e in got} == set(ids)
    finally:
        if watcher is not None:
            watcher.cancel()
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(task_a, 30)
        if task_b is not None:
            await asyncio.wait_for(task_b, 30)
    assert gaps == []
    assert harness.reconciler.calls.total() >= 12 + moved  # every new owner reconciled
