"""Pieces of the streams manager that need no exchange: the database listing (cheap, decrypts
only new or changed accounts), the manager's account set under a changing listing, control
replies, and the options taken from settings."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from tests.conftest import fresh_postgres_database

from tradewire.clock import ManualClock
from tradewire.config import Settings
from tradewire.store import users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import ExchangeAccount
from tradewire.streams.directory import AccountSpec, StoreDirectory
from tradewire.streams.manager import StreamsManager
from tradewire.streams.options import StreamOptions
from tradewire.streams.session import AccountRef, ControlReply, UserStreamSession
from tradewire.streams.state import Account, Group
from tradewire.trading.clients import ClientPool


class CountingBox(SecretBox):
    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.opened: Counter[str] = Counter()

    def decrypt(self, token: str) -> str:
        secret = super().decrypt(token)
        self.opened[secret] += 1
        return secret


class NullPublisher:
    async def submit(self, envelope: Any) -> None:
        return None

    def offer(self, envelope: Any) -> bool:
        return True

    async def room(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "postgresql-held"])
async def test_the_listing_decrypts_nothing_and_the_manager_only_new_or_changed(
    tmp_path: Path, database: str
) -> None:
    """Every refresh lists the active accounts without decrypting; the manager decrypts an
    account's secret once when it starts it, again only when its credentials change; a
    disabled user's account leaves the listing. On PostgreSQL an unchanged listing is not
    read again: the directory answers with the very same list (its digest did not change),
    and a new one after each change — through a session, or (given the engine, as the
    streams role does) over the driver connection the directory holds."""
    if database == "sqlite":
        await _listing_scenario(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", database)
    else:
        async with fresh_postgres_database() as url:
            await _listing_scenario(url, database)


async def _listing_scenario(url: str, database: str) -> None:
    await upgrade(url)
    engine, sessions = create_engine_and_sessions(url)
    box = CountingBox(os.urandom(32))
    try:
        async with sessions() as session:
            ann, _ = await users.create_user(session, box, name="ann", api_key="key-ann-123456",
                                             api_secret="secret-ann")
            bob, bob_account = await users.create_user(
                session, box, name="bob", api_key="key-bob-123456", api_secret="secret-bob")
            await session.commit()
        async with httpx.AsyncClient() as http:
            directory = StoreDirectory(sessions, box, ClientPool("http://sim", http),
                                       engine=engine if database.endswith("held") else None)
            manager = StreamsManager(
                directory, NullPublisher(), "ws://sim", ManualClock(),
                options=StreamOptions(keys_per_connection=1))
            manager._start = lambda spec: manager._singles.__setitem__(  # type: ignore[method-assign]
                spec.account_id, _FakeSingle(spec, directory))
            for _ in range(3):
                await manager.sync()
            assert box.opened == Counter({"secret-ann": 1, "secret-bob": 1})
            listed = await directory.listing()
            assert [s.user_id for s in listed] == [ann.id, bob.id]
            if database.startswith("postgresql"):
                assert await directory.listing() is listed  # digest unchanged: not re-read
            async with sessions() as session:
                rows = await users.stream_accounts(session)
            assert "secret" not in repr(rows)

            async with sessions() as session:
                await session.execute(update(ExchangeAccount).where(
                    ExchangeAccount.id == bob_account.id).values(
                    api_secret_enc=box.encrypt("secret-bob-2")))
                await session.commit()
            changed = await directory.listing()
            assert changed is not listed and changed != listed
            await manager.sync()
            await manager.sync()
            assert box.opened["secret-bob-2"] == 1 and box.opened["secret-ann"] == 1

            async with sessions() as session:
                await users.set_user_active(session, ann.id, False)
                await session.commit()
            await manager.sync()
            assert set(manager._singles) == {bob_account.id}
            async with sessions() as session:
                await users.create_user(session, box, name="cid", api_key="key-cid-123456",
                                        api_secret="secret-cid")
                await session.commit()
            await manager.sync()
            assert len(manager._singles) == 2
            await directory.aclose()
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_the_held_digest_connection_is_replaced_after_the_server_drops_it() -> None:
    """The server ends the directory's connection (a restart, an admin's kill): that refresh
    fails (the manager logs it and keeps its streams), the next one opens a new connection
    and sees the changes made meanwhile."""
    async with fresh_postgres_database() as url:
        await upgrade(url)
        engine, sessions = create_engine_and_sessions(url)
        box = SecretBox(os.urandom(32))
        try:
            async with sessions() as session:
                await users.create_user(session, box, name="ann", api_key="key-ann-123456",
                                        api_secret="secret-ann")
                await session.commit()
            async with httpx.AsyncClient() as http:
                directory = StoreDirectory(sessions, box, ClientPool("http://sim", http),
                                           engine=engine)
                first = await directory.listing()
                assert len(first) == 1 and await directory.listing() is first
                held_pid = await directory._driver.fetchval("SELECT pg_backend_pid()")
                async with sessions() as session:
                    await session.execute(text(f"SELECT pg_terminate_backend({held_pid})"))
                    await users.create_user(session, box, name="bob",
                                            api_key="key-bob-123456", api_secret="secret-bob")
                    await session.commit()
                with pytest.raises(Exception):  # noqa: B017 - the driver's own error type
                    await directory.listing()
                again = await directory.listing()
                assert [spec.user_id for spec in again] != [s.user_id for s in first]
                assert len(again) == 2
                await directory.aclose()
        finally:
            await engine.dispose()


class _FakeSingle:
    def __init__(self, spec: AccountSpec, directory: StoreDirectory) -> None:
        self.spec = spec
        directory.client(spec)


def test_error_replies_to_control_messages_are_replies_not_events() -> None:
    """``{"code", "msg", "id"}`` answers a control message; it is never published as an
    event of some account."""
    session = UserStreamSession()
    from tradewire.streams.session import AccountRef

    session.add("key-a", AccountRef(1, 10))
    [reply] = session.feed('{"code":2,"msg":"Invalid request: too many streams","id":7}')
    assert reply == ControlReply(7, None, {"code": 2, "msg": "Invalid request: too many streams"})
    assert session.feed('{"result":null,"id":"uuid-like"}') == []


def test_options_come_from_the_settings() -> None:
    settings = Settings(keys_per_connection=300, subscribe_batch=20, control_msgs_per_s=4,
                        blind_after_s=120, listenkey_concurrency=3, stream_shards=64,
                        _env_file=None)  # type: ignore[call-arg]
    options = StreamOptions.from_settings(settings, refresh_s=0.5)
    assert (options.keys_per_connection, options.subscribe_batch, options.control_msgs_per_s,
            options.blind_after_s, options.listenkey_concurrency, options.stream_shards,
            options.refresh_s) == (300, 20, 4, 120, 3, 64, 0.5)


def test_status_of_an_idle_manager() -> None:
    manager = StreamsManager(_Empty(), NullPublisher(), "ws://sim", ManualClock())
    status = manager.status()
    assert status["wanted"] == status["streaming"] == status["connections"] == 0
    assert status["owned_shards"] == 256 and status["mode"] == "mux"


class _Empty:
    async def listing(self) -> list[AccountSpec]:
        return []

    async def aclose(self) -> None:
        return None

    def client(self, spec: AccountSpec) -> Any:
        raise AssertionError("nothing to start")


class SlowKeepaliveClient:
    """A client whose listenKey PUT waits until released (e.g. on the IP weight budget)."""

    def __init__(self) -> None:
        self.puts = 0
        self.release = asyncio.Event()

    async def keepalive_listen_key(self) -> str:
        self.puts += 1
        await self.release.wait()
        return "key"


async def test_a_keepalive_put_waiting_long_is_never_doubled() -> None:
    """A PUT held up far beyond the scheduler's retry time: no second PUT of that key is sent
    meanwhile; once it succeeds the key's next extension is a whole cycle later."""
    clock = ManualClock()
    manager = StreamsManager(
        StaticDirectory(), NullPublisher(), "ws://unused", clock,
        options=StreamOptions(keepalive_interval_s=1800, keepalive_max_per_s=10),
    )
    client = SlowKeepaliveClient()
    spec = AccountSpec(1, 1, "f")
    account = Account(spec, AccountRef(1, 1), client, 0)  # type: ignore[arg-type]
    account.key = "key"
    manager.accounts[1] = account
    manager._keepalive.add(1, clock.now_ms())
    due = manager._keepalive.next_due_ms()
    assert due is not None
    clock.set(due)
    for _ in range(60):  # ten minutes of ticks while the PUT waits (retry_ms is 30 s)
        manager._keepalives(clock.now_ms())
        await asyncio.sleep(0)
        clock.advance(10_000)
    assert client.puts == 1
    client.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert manager.keepalives == 1 and not account.put_busy
    next_due = manager._keepalive.next_due_ms()
    assert next_due is not None and next_due - clock.now_ms() >= 15 * 60_000
    manager._keepalives(clock.now_ms())
    await asyncio.sleep(0)
    assert client.puts == 1


class StaticDirectory:
    async def listing(self) -> list[AccountSpec]:
        return []

    async def aclose(self) -> None:
        return None

    def client(self, spec: AccountSpec) -> Any:
        raise AssertionError("not used")


async def test_close_outside_run_releases_the_directory() -> None:
    """``close()`` (a graceful close without ``run``) ends like ``run`` does: the directory's
    held database connection is released too, not left to the garbage collector."""
    closed: list[bool] = []

    class Closing(StaticDirectory):
        async def aclose(self) -> None:
            closed.append(True)

    manager = StreamsManager(Closing(), NullPublisher(), "ws://unused", ManualClock())
    await manager.refresh()
    await manager.close()
    assert closed == [True] and manager.status()["streaming"] == 0


class KeyingClient:
    """listenKey POSTs that wait until released (the IP weight budget being spent)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def new_listen_key(self) -> str:
        await self.release.wait()
        return "fresh-key"


class RecordingReconciler:
    def __init__(self) -> None:
        self.calls: list[int] = []

    async def reconcile(self, account: AccountRef, client: Any) -> list[dict[str, Any]]:
        self.calls.append(account.account_id)
        return []


async def test_reconciliation_waits_while_other_accounts_take_their_keys() -> None:
    """Streams first: while any account waits for its listenKey, a streaming account's
    reconciliation (REST weight 8 for a missed fill) waits, so that a new shard owner keying
    hundreds of accounts does not spend the IP weight on reconciliations first; once every
    key is taken it runs."""
    reconciler = RecordingReconciler()
    manager = StreamsManager(StaticDirectory(), NullPublisher(), "ws://unused", ManualClock(),
                             reconciler=reconciler)
    keying_client = KeyingClient()
    waiting = Account(AccountSpec(1, 1, "f"), AccountRef(1, 1), keying_client, 0)  # type: ignore[arg-type]
    streaming = Account(AccountSpec(2, 2, "f"), AccountRef(2, 2), object(), 0)  # type: ignore[arg-type]
    manager.accounts.update({1: waiting, 2: streaming})
    taking = asyncio.create_task(manager._take_key(waiting))
    await asyncio.sleep(0)
    reconciling = asyncio.create_task(manager._reconcile(streaming))
    for _ in range(10):
        await asyncio.sleep(0)
    assert reconciler.calls == [] and not reconciling.done()
    keying_client.release.set()
    await taking
    await reconciling
    assert reconciler.calls == [2] and waiting.key == "fresh-key"
    assert not streaming.reconcile and manager.reconciliations == 1


def test_each_socket_is_watched_once_per_interval_spread_over_the_ticks() -> None:
    """Rotation, blindness and audit checks of 25 sockets: all at the first tick, then each
    socket once per ``watch_interval_s``, a few per 0.1 s tick rather than all of them in
    every tick; a socket under blind repair is looked at every tick."""
    clock = ManualClock()
    manager = StreamsManager(_Empty(), NullPublisher(), "ws://sim", clock,
                             options=StreamOptions(watch_interval_s=1.0, tick_s=0.1))
    for group_id in range(25):
        manager.groups[group_id] = Group(group_id)
    watched: list[tuple[int, int]] = []
    manager._watch = lambda group, now: watched.append((now, group.id))  # type: ignore[method-assign]
    per_tick = []
    for _ in range(31):  # 3 s of ticks
        before = len(watched)
        manager._watch_due(clock.now_ms())
        per_tick.append(len(watched) - before)
        clock.advance(100)
    assert per_tick[0] == 25
    assert max(per_tick[1:]) <= 5 and sum(per_tick[1:]) == 75  # 3 more rounds, spread
    by_group: dict[int, list[int]] = {}
    for now, group_id in watched:
        by_group.setdefault(group_id, []).append(now)
    for times in by_group.values():
        gaps = {b - a for a, b in itertools.pairwise(times[1:])}
        assert gaps == {1000}  # after the first catch-up, exactly once a second

    manager.groups[7].blind_strikes = 1
    before = len(watched)
    for _ in range(3):
        manager._watch_due(clock.now_ms())
        clock.advance(100)
    assert [g for _, g in watched[before:]].count(7) == 3
