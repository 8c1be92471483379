"""Users and their exchange accounts. The caller owns the transaction (commit/rollback)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.errors import Conflict, NotFound
from tradewire.store._sql import insert_ignoring_conflicts
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import ExchangeAccount, User
from tradewire.store.types import now_ms

DEFAULT_LABEL = "default"


@dataclass(frozen=True, repr=False)
class AccountCredentials:
    """What is needed to trade on one account; the secret is decrypted, so never log this."""

    account_id: int
    user_id: int
    api_key: str
    api_secret: str
    webhook_url: str | None
    max_leverage: int | None = None
    max_position_usdt: Decimal | None = None

    def __repr__(self) -> str:
        return (
            f"AccountCredentials(account_id={self.account_id}, user_id={self.user_id}, "
            f"api_key={mask(self.api_key)!r}, api_secret='***')"
        )


def mask(api_key: str) -> str:
    """An API key shortened for logs: ``abcd…wxyz``."""
    return f"{api_key[:4]}…{api_key[-4:]}" if len(api_key) > 12 else "***"


async def create_user(
    session: AsyncSession,
    box: SecretBox,
    *,
    name: str,
    api_key: str,
    api_secret: str,
    discord_webhook_url: str | None = None,
    label: str = DEFAULT_LABEL,
    now: int | None = None,
    max_leverage: int | None = None,
    max_position_usdt: Decimal | None = None,
) -> tuple[User, ExchangeAccount]:
    """A new active user with one active exchange account (secret stored encrypted).
    ``Conflict`` when the name or the API key is taken; the transaction stays usable."""
    if await session.scalar(select(ExchangeAccount.id).where(ExchangeAccount.api_key == api_key)):
        raise Conflict(f"API key {mask(api_key)} is already registered to another user")
    inserted = await session.scalar(
        insert_ignoring_conflicts(
            session, User, name=name, discord_webhook_url=discord_webhook_url, active=True,
            created_at=now_ms(now), max_leverage=max_leverage,
            max_position_usdt=max_position_usdt,
        ).returning(User.id)
    )
    if inserted is None:
        raise Conflict(f"user name {name!r} is already taken")
    user = await get_user(session, inserted)
    account = ExchangeAccount(
        user_id=user.id, label=label, api_key=api_key,
        api_secret_enc=box.encrypt(api_secret), active=True, created_at=now_ms(now),
    )
    session.add(account)
    await session.flush()
    return user, account


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.id)))


async def get_user(session: AsyncSession, user_id: int) -> User:
    """The user, or ``NotFound``."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def set_user_active(session: AsyncSession, user_id: int, active: bool) -> User:
    """Activate or deactivate a user (inactive users get no new trades); ``NotFound``."""
    user = await get_user(session, user_id)
    user.active = active
    await session.flush()
    return user


async def list_accounts(session: AsyncSession, user_id: int) -> list[ExchangeAccount]:
    query = select(ExchangeAccount).where(ExchangeAccount.user_id == user_id)
    return list(await session.scalars(query.order_by(ExchangeAccount.id)))


async def account_credentials(
    session: AsyncSession, box: SecretBox, account_id: int
) -> AccountCredentials:
    """Credentials of one account, active or not (to manage its open trades); ``NotFound``."""
    query = _credentials_query().where(ExchangeAccount.id == account_id)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound(f"exchange account {account_id} does not exist")
    return _credentials(box, row[0], row[1])


async def subscribed_accounts(
    session: AsyncSession, box: SecretBox, user_ids: Sequence[int] | None = None
) -> list[AccountCredentials]:
    """Active accounts of active users, limited to ``user_ids`` when given (a signal's targets)."""
    query = _credentials_query().where(User.active.is_(True), ExchangeAccount.active.is_(True))
    if user_ids is not None:
        query = query.where(User.id.in_(list(user_ids)))
    rows = await session.execute(query.order_by(ExchangeAccount.id))
    return [_credentials(box, account, user) for account, user in rows]


async def active_accounts(session: AsyncSession, box: SecretBox) -> list[AccountCredentials]:
    """Every account the streams layer should watch: ``subscribed_accounts`` for all users."""
    return await subscribed_accounts(session, box, None)


@dataclass(frozen=True, repr=False)
class StreamAccountRow:
    """An active account as the streams layer lists it: nothing decrypted (the secret stays
    the stored ciphertext until the account is actually started)."""

    account_id: int
    user_id: int
    api_key: str
    api_secret_enc: str

    def __repr__(self) -> str:
        return (f"StreamAccountRow(account_id={self.account_id}, user_id={self.user_id}, "
                f"api_key={mask(self.api_key)!r})")


STREAM_ACCOUNTS_CHUNK = 100  # rows read between two yields to the event loop


async def stream_accounts(session: AsyncSession) -> list[StreamAccountRow]:
    """Active accounts of active users, cheaply (one query, no decryption): the streams
    manager re-reads this every couple of seconds and decrypts only new or changed ones."""
    query = (
        select(ExchangeAccount.id, ExchangeAccount.user_id, ExchangeAccount.api_key,
               ExchangeAccount.api_secret_enc)
        .join(User, User.id == ExchangeAccount.user_id)
        .where(User.active.is_(True), ExchangeAccount.active.is_(True))
        .order_by(ExchangeAccount.id)
    )
    # Core execution on the session's connection (the ORM's row loading cost ~30 us a row), read
    # in chunks that let the event loop run in between: with 5,000 accounts one pass was a stall
    # of the streams process's socket readers every refresh.
    result = await (await session.connection()).execute(query)
    out: list[StreamAccountRow] = []
    for chunk in result.partitions(STREAM_ACCOUNTS_CHUNK):
        out += [StreamAccountRow(int(a), int(u), str(k), str(e)) for a, u, k, e in chunk]
        await asyncio.sleep(0)
    return out


def _stream_accounts_digest_query() -> Select[int, str | None]:
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    row_text = func.concat_ws(":", ExchangeAccount.id, ExchangeAccount.user_id,
                              ExchangeAccount.api_key, ExchangeAccount.api_secret_enc)
    return (
        select(func.count(), func.md5(func.string_agg(
            row_text, aggregate_order_by(literal(","), ExchangeAccount.id))))
        .select_from(ExchangeAccount)
        .join(User, User.id == ExchangeAccount.user_id)
        .where(User.active.is_(True), ExchangeAccount.active.is_(True))
    )


def digest_text(count: int, md5: str | None) -> str:
    return f"{count}:{md5 or ''}"


async def stream_accounts_digest(session: AsyncSession) -> str | None:
    """A digest of what ``stream_accounts`` would list (ids, user ids, API keys, encrypted
    secrets, in id order), computed by PostgreSQL: one short row instead of thousands, so the
    streams manager reads the listing only when it changed. None on other databases (SQLite:
    small, read whole)."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return None
    count, md5 = (await connection.execute(_stream_accounts_digest_query())).one()
    return digest_text(count, md5)


@functools.cache
def stream_accounts_digest_sql() -> str:
    """``stream_accounts_digest``'s query as PostgreSQL text without parameters, for a driver
    connection (``streams.directory``: 0.14-0.5 ms of client CPU a call instead of 1.4-1.9 ms
    through a session); its row is (count, md5) for ``digest_text``."""
    from sqlalchemy.dialects.postgresql.base import PGDialect

    compiled = _stream_accounts_digest_query().compile(
        dialect=PGDialect(), compile_kwargs={"literal_binds": True})  # type: ignore[no-untyped-call]
    return str(compiled)


def _credentials_query() -> Select[ExchangeAccount, User]:
    return select(ExchangeAccount, User).join(User, User.id == ExchangeAccount.user_id)


def _credentials(box: SecretBox, account: ExchangeAccount, user: User) -> AccountCredentials:
    return AccountCredentials(
        account_id=account.id,
        user_id=account.user_id,
        api_key=account.api_key,
        api_secret=box.decrypt(account.api_secret_enc),
        webhook_url=user.discord_webhook_url,
        max_leverage=user.max_leverage,
        max_position_usdt=user.max_position_usdt,
    )
