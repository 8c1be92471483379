"""The streams manager's state: account states, the per-account/group records, and the core
every part of the manager builds on.

``StreamsManager`` is assembled from parts that each own one concern (``groups``: sockets,
``accounts``: one account's life, ``upkeep``: the periodic checks of sockets and keys,
``status``: snapshots and metrics; ``manager``: lifecycle and ownership). They share one set of
records, so ``StreamsCore`` declares that shared state once (the manager's ``__init__`` fills
it) together with the few operations every part needs: spawning a tracked task, waking a
group's accounts, and marking an account for a new listenKey (asked by the socket reader, the
keepalive PUTs and the subscription audit alike).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradewire import metrics
from tradewire.bus.base import Envelope
from tradewire.clock import Clock
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import log
from tradewire.streams.account_stream import AccountStream
from tradewire.streams.connect_budget import ConnectBudget
from tradewire.streams.connection import MuxConnection, Sink
from tradewire.streams.directory import AccountDirectory, AccountSpec
from tradewire.streams.keepalive import KeepaliveScheduler
from tradewire.streams.options import StreamOptions
from tradewire.streams.session import AccountRef
from tradewire.streams.shards import Shards, shard_of

logger = logging.getLogger("tradewire.streams")


class Publisher(Sink, Protocol):
    """What the manager needs of ``streams.publisher.BatchPublisher`` (``offer`` and ``room``
    as a connection's ``Sink``)."""

    async def submit(self, envelope: Envelope) -> None: ...

    async def flush(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class Reconciler(Protocol):
    """``streams.reconcile.Reconciler``: synthetic payloads for what a gap may have hidden."""

    async def reconcile(self, account: AccountRef, client: ExchangeClient) -> list[dict[str, Any]]:
        ...



class AccountState(enum.StrEnum):
    NEW = "new"  # wanted, no listenKey yet
    KEYED = "keyed"  # has a key, not (yet/any more) subscribed on an open connection
    STREAMING = "streaming"  # key confirmed on an open connection
    REKEYING = "rekeying"  # replacing an expired/refused key
    RECONCILING = "reconciling"  # subscribed; REST reconciliation of the gap running
    BLIND = "blind"  # its connection stopped delivering (being repaired)


@dataclass(eq=False)
class Account:
    spec: AccountSpec
    ref: AccountRef
    client: ExchangeClient
    shard: int
    state: AccountState = AccountState.NEW
    key: str | None = None
    old_key: str | None = None  # replaced, unsubscribed once the new one is confirmed
    group: Group | None = None
    rekey: bool = False
    reconcile: bool = True  # start-up / new owner: reconcile once subscribed
    reconcile_failures: int = 0
    removed: bool = False
    blind: bool = False
    failures: int = 0
    put_busy: bool = False
    put_retry_ms: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Single:
    spec: AccountSpec
    stream: AccountStream
    task: asyncio.Task[None]


@dataclass(eq=False)
class Group:
    id: int
    members: set[int] = field(default_factory=set)
    conn: MuxConnection | None = None
    task: asyncio.Task[None] | None = None
    ever_open: bool = False
    closing: bool = False
    rotating: bool = False
    auditing: bool = False
    audited_ms: int = 0
    blind_strikes: int = 0
    max_age_ms: int = 0
    watch_ms: int = 0  # clock ms of its next ``_watch`` (``Upkeep._watch_due``)



class StreamsCore:
    """State shared by the parts of ``StreamsManager`` (declared here, set by its
    ``__init__``), and the operations they all use."""

    options: StreamOptions
    shards: Shards
    accounts: dict[int, Account]
    groups: dict[int, Group]
    activity: dict[int, int]  # account id -> clock ms of its last event
    _directory: AccountDirectory
    _publisher: Publisher
    _reconciler: Reconciler | None
    _ws_base_url: str
    _clock: Clock
    _budget: ConnectBudget
    _timer: metrics.PublishTimer | None
    _keepalive: KeepaliveScheduler
    _post_slots: asyncio.Semaphore
    _put_slots: asyncio.Semaphore
    _reconcile_slots: asyncio.Semaphore
    _keying: int
    _keys_taken: asyncio.Event
    _listing: dict[int, AccountSpec] | None
    _owned: frozenset[int] | None
    _shard_of: dict[int, int]  # account id -> its shard (cached hash)
    _singles: dict[int, Single]
    _tasks: set[asyncio.Task[Any]]
    _group_ids: int
    _conn_ids: int
    reconnects: int
    rotations: int
    rekeys: int
    keepalives: int
    listenkey_posts: int
    reconciliations: int
    synthetic_events: int
    repair_failures: int

    @property
    def single_socket_mode(self) -> bool:
        return self.options.keys_per_connection == 1

    def _spawn(self, job: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(job)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _wake_members(self, group: Group) -> None:
        for account_id in group.members:
            account = self.accounts.get(account_id)
            if account is not None:
                account.wake.set()

    def _needs_rekey(self, account: Account, why: str) -> None:
        if account.rekey or account.removed:
            return
        account.rekey = True
        account.reconcile = True
        account.state = AccountState.REKEYING
        self.rekeys += 1
        metrics.STREAM_REKEYS.inc()
        log(logger, logging.WARNING, "listenKey replaced", reason=why,
            userId=account.ref.user_id, accountId=account.ref.account_id)
        account.wake.set()

    def _on_expired(self, ref: AccountRef, listen_key: str) -> None:
        account = self.accounts.get(ref.account_id)
        if account is not None and account.key == listen_key:
            self._needs_rekey(account, "listenKeyExpired")

    def _shard(self, account_id: int) -> int:
        shard = self._shard_of.get(account_id)
        if shard is None:
            shard = self._shard_of[account_id] = shard_of(account_id, self.shards.shards)
        return shard
