"""The store on SQLite and PostgreSQL: migrations, users, signal intake, event ledger."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.errors import Conflict, NotFound
from tradewire.store import events, signals, users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Base, ExchangeAccount, ProcessedEvent, SignalStatus

Sessions = async_sessionmaker[AsyncSession]
SECRET = "s3cr3t-api-secret-value-0123456789"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


def _schema_diffs(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    """Migrating to head (twice: it is idempotent) yields exactly the models' schema."""
    await upgrade(db_url)
    await upgrade(db_url)
    engine, _ = create_engine_and_sessions(db_url)
    async with engine.connect() as connection:
        assert await connection.run_sync(_schema_diffs) == []
        names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert names == set(Base.metadata.tables) | {"alembic_version"}


async def test_concurrent_upgrades_are_serialised(db_url: str) -> None:
    """Several processes migrating one fresh database at once all succeed (a lock orders them)."""
    await asyncio.gather(*(upgrade(db_url) for _ in range(3)))
    engine, _ = create_engine_and_sessions(db_url)
    async with engine.connect() as connection:
        assert await connection.run_sync(_schema_diffs) == []
    await engine.dispose()


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    """SQLite runs in WAL mode with a busy timeout and enforced foreign keys."""
    engine, _ = create_engine_and_sessions(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b.db'}")
    async with engine.connect() as connection:
        pragmas = [
            (await connection.execute(text(f"PRAGMA {name}"))).scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        ]
    await engine.dispose()
    assert pragmas == ["wal", 5000, 1]


async def test_create_user_stores_the_secret_encrypted(sessions: Sessions, box: SecretBox) -> None:
    """A new user gets an active account; only ciphertext reaches the database."""
    async with sessions.begin() as session:
        user, account = await users.create_user(
            session, box, name="alice", api_key="KEY-alice-0123456789", api_secret=SECRET,
            discord_webhook_url="https://discord.test/hook/a",
        )
    async with sessions() as session:
        stored = await session.scalar(select(ExchangeAccount.api_secret_enc))
        creds = await users.account_credentials(session, box, account.id)
    assert stored is not None and SECRET not in stored and stored.startswith("v1:")
    assert (creds.user_id, creds.api_secret) == (user.id, SECRET)
    assert creds.api_key == "KEY-alice-0123456789"
    assert creds.webhook_url == "https://discord.test/hook/a"
    assert SECRET not in repr(creds) and "KEY-alice-0123456789" not in repr(creds)


async def test_duplicate_user_name_is_a_conflict_that_keeps_the_transaction(
    sessions: Sessions, box: SecretBox
) -> None:
    """A taken name raises Conflict; the same transaction can go on and commit."""
    async with sessions.begin() as session:
        await users.create_user(session, box, name="bob", api_key="k1", api_secret="s1")
        with pytest.raises(Conflict):
            await users.create_user(session, box, name="bob", api_key="k2", api_secret="s2")
        await users.create_user(session, box, name="carol", api_key="k3", api_secret="s3")
    async with sessions() as session:
        assert [u.name for u in await users.list_users(session)] == ["bob", "carol"]


async def test_subscribed_accounts_skip_inactive_users(sessions: Sessions, box: SecretBox) -> None:
    """Only active users' accounts trade; a signal can target a subset of users."""
    async with sessions.begin() as session:
        ids = [
            (await users.create_user(session, box, name=n, api_key=f"k-{n}", api_secret=n))[0].id
            for n in ("u1", "u2", "u3")
        ]
        await users.set_user_active(session, ids[1], False)
    async with sessions() as session:
        every = await users.active_accounts(session, box)
        targeted = await users.subscribed_accounts(session, box, [ids[1], ids[2]])
        assert (await users.get_user(session, ids[1])).active is False
        with pytest.raises(NotFound):
            await users.get_user(session, 999_999)
        with pytest.raises(NotFound):
            await users.account_credentials(session, box, 999_999)
    assert [(c.user_id, c.api_secret) for c in every] == [(ids[0], "u1"), (ids[2], "u3")]
    assert [c.user_id for c in targeted] == [ids[2]]


async def test_record_signal_accepts_each_signal_id_once(sessions: Sessions) -> None:
    """The first record of a signal id wins; repeats return False and change nothing."""
    async with sessions.begin() as session:
        assert await signals.record_signal(
            session, "sig-1", "BTCUSDT", "LONG", {"stop_loss": "90000", "leverage": 5}
        )
        assert not await signals.record_signal(session, "sig-1", "ETHUSDT", "SHORT", {})
        assert await signals.record_signal(
            session, "sig-2", "BTCUSDT", "UP", "{}", status=SignalStatus.REJECTED
        )
    async with sessions() as session:
        first = await signals.get_signal(session, "sig-1")
        second = await signals.get_signal(session, "sig-2")
    assert first is not None and first.symbol == "BTCUSDT"
    assert first.payload == '{"leverage":5,"stop_loss":"90000"}'
    assert second is not None and second.status is SignalStatus.REJECTED


async def test_mark_processed_is_idempotent_inside_one_transaction(
    sessions: Sessions, box: SecretBox
) -> None:
    """A duplicate event id returns False without spoiling the transaction's other writes."""
    async with sessions.begin() as session:
        assert await events.mark_processed(session, "acct1:ORDER:1:FILLED", 1, "ENTRY_FILLED")
        assert not await events.mark_processed(session, "acct1:ORDER:1:FILLED", 1, "ENTRY_FILLED")
        await users.create_user(session, box, name="dave", api_key="k", api_secret="s")
    async with sessions.begin() as session:
        assert not await events.mark_processed(session, "acct1:ORDER:1:FILLED", 1, "ENTRY_FILLED")
        assert await events.is_processed(session, "acct1:ORDER:1:FILLED")
    async with sessions() as session:
        assert [u.name for u in await users.list_users(session)] == ["dave"]
        rows = list(await session.scalars(select(ProcessedEvent)))
    assert [(r.event_id, r.account_id, r.kind) for r in rows] == [
        ("acct1:ORDER:1:FILLED", 1, "ENTRY_FILLED")
    ]


async def test_a_rolled_back_mark_is_forgotten(sessions: Sessions) -> None:
    """If the transaction fails, the event counts as unprocessed and is applied on redelivery."""
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:
            assert await events.mark_processed(session, "ev-1", 1, "SL_TRIGGERED")
            raise RuntimeError("effect failed")
    async with sessions.begin() as session:
        assert await events.mark_processed(session, "ev-1", 1, "SL_TRIGGERED")


@pytest.mark.postgres
async def test_concurrent_marks_of_one_event_let_exactly_one_win(postgres_url: str) -> None:
    """Two workers marking the same event: the second waits for the first and gets False."""
    await upgrade(postgres_url)
    engine, sessions = create_engine_and_sessions(postgres_url)
    try:
        async with sessions() as first, sessions() as second:
            assert await events.mark_processed(first, "ev-x", 1, "TP_TRIGGERED")
            racing = asyncio.create_task(events.mark_processed(second, "ev-x", 1, "TP_TRIGGERED"))
            await asyncio.sleep(0.2)
            assert not racing.done()  # blocked on the first transaction's row
            await first.commit()
            assert await racing is False
            await second.commit()
    finally:
        await engine.dispose()
