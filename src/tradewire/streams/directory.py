"""Which accounts exist to be streamed, and their REST clients.

The manager re-reads the listing every ``refresh_s`` (2 s), so listing must stay cheap: on
PostgreSQL it first asks for a digest of the listing (``users.stream_accounts_digest``) and
reads the rows only when it changed (5,000 rows every 2 s were ~2.5 % of the streams process's
time at 1,000 events/s, in slices that delayed the socket readers). Given the engine, the
digest goes over one driver connection the directory holds (``aclose`` returns it), as one
prepared statement: 0.14-0.5 ms of client CPU instead of 1.4-1.9 ms for a session, checkout,
execution and rollback (``make bench-stream-calls``) — less time in which the socket readers
wait, every refresh. It reads rows without
decrypting anything, and ``fingerprint`` (a hash of the API key and the *encrypted*
secret) tells the manager whether an account's credentials changed. Only an account that is new
or changed costs a decryption (``AccountDirectory.client``). Kept apart from the manager so the
database and the crypto box stay out of the streaming code (tests list accounts from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from tradewire.exchange.client import ExchangeClient
from tradewire.store import users
from tradewire.store.crypto import SecretBox
from tradewire.trading.clients import ClientPool


@dataclass(frozen=True)
class AccountSpec:
    """One active account as listed (cheaply: nothing decrypted). ``fingerprint`` changes
    when its credentials change."""

    account_id: int
    user_id: int
    fingerprint: str


class AccountDirectory(Protocol):
    async def listing(self) -> Sequence[AccountSpec]:
        """Every active account of an active user (cheap: called every ``refresh_s``). The
        same object as the previous answer means "unchanged" (a returned list is never
        mutated afterwards)."""
        ...

    def client(self, spec: AccountSpec) -> ExchangeClient:
        """The account's REST client (decrypts its secret; called for new/changed only)."""
        ...

    async def aclose(self) -> None:
        """Release what listing holds (a database connection); listing may open it again."""
        ...


class StoreDirectory:
    """``AccountDirectory`` over the database: one cheap listing query per refresh; a secret
    is decrypted only when an account is new or its credentials changed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox,
                 pool: ClientPool, *, engine: AsyncEngine | None = None) -> None:
        self._sessions = sessions
        # PostgreSQL: the digest over a held driver connection (module docstring)
        self._engine = engine if engine and engine.dialect.name == "postgresql" else None
        self._held: AsyncConnection | None = None
        self._driver: Any = None  # asyncpg's connection under ``_held``
        self._digest_lock = asyncio.Lock()
        self._box = box
        self._pool = pool
        self._rows: dict[int, users.StreamAccountRow] = {}
        self._specs: dict[int, AccountSpec] = {}
        self._digest: str | None = None  # of the rows behind ``_listed``
        self._listed: list[AccountSpec] = []

    async def listing(self) -> Sequence[AccountSpec]:
        """The specs; the very same list object as last time when the database's digest of
        the listing did not change (PostgreSQL: nothing read but the digest)."""
        digest: str | None = None
        if self._engine is not None:
            digest = await self._held_digest()
            if digest == self._digest:
                return self._listed
        async with self._sessions() as session:
            if self._engine is None:
                digest = await users.stream_accounts_digest(session)
                if digest is not None and digest == self._digest:
                    return self._listed
            rows = await users.stream_accounts(session)
        # Unchanged rows keep their previous records and specs: no hash per row per refresh,
        # and nothing new survives a refresh (survivors fill the collector's old generation,
        # whose full scans stalled the loop for most of a second with 5,000 accounts).
        old_rows, old_specs = self._rows, self._specs
        new_rows: dict[int, users.StreamAccountRow] = {}
        new_specs: dict[int, AccountSpec] = {}
        specs: list[AccountSpec] = []
        for n, row in enumerate(rows, 1):
            if n % 100 == 0:
                await asyncio.sleep(0)  # thousands of rows: let the socket readers run
            account_id = row.account_id
            old = old_rows.get(account_id)
            spec = old_specs.get(account_id) if old == row else None
            if spec is None or old is None:
                spec = AccountSpec(account_id, row.user_id, fingerprint(row))
            else:
                row = old
            new_rows[account_id] = row
            new_specs[account_id] = spec
            specs.append(spec)
        self._rows, self._specs = new_rows, new_specs
        self._digest, self._listed = digest, specs
        return specs

    async def _held_digest(self) -> str:
        """The digest over the held connection (opened on first use; dropped on any error,
        so the next refresh opens a fresh one)."""
        assert self._engine is not None
        async with self._digest_lock:
            if self._driver is None:
                held = await self._engine.connect()
                try:
                    self._driver = (await held.get_raw_connection()).driver_connection
                except BaseException:
                    await held.close()
                    raise
                self._held = held
            try:
                count, md5 = await self._driver.fetchrow(users.stream_accounts_digest_sql())
            except BaseException:
                await self._release(invalidate=True)
                raise
        return users.digest_text(count, md5)

    async def _release(self, *, invalidate: bool = False) -> None:
        held, self._held, self._driver = self._held, None, None
        if held is not None:
            with contextlib.suppress(Exception):
                if invalidate:
                    await held.invalidate()
                await held.close()

    async def aclose(self) -> None:
        async with self._digest_lock:
            await self._release()

    def client(self, spec: AccountSpec) -> ExchangeClient:
        row = self._rows[spec.account_id]
        return self._pool.get(row.account_id, row.api_key, self._box.decrypt(row.api_secret_enc))


def fingerprint(row: users.StreamAccountRow) -> str:
    """Changes when the account's API key or (encrypted) secret changes."""
    text = f"{row.api_key}\0{row.api_secret_enc}".encode()
    return hashlib.blake2b(text, digest_size=12).hexdigest()
