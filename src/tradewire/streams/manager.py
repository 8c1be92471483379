"""The streams role (Layer 1): every active account of the owned shards streams, on few sockets.

``StreamsManager.run(stop)`` keeps, until ``stop``:

* **wanted accounts** = active accounts (``AccountDirectory.listing()``, re-read every
  ``refresh_s``; credentials are decrypted only for accounts new or changed) whose shard this
  pod owns (``Shards.owned()``, polled every tick), plus those of shards it is handing over
  (``draining()``) until the new owner is ready or the drain deadline passed. An account
  leaving the wanted set is unsubscribed at once (never ``DELETE``d: the new owner shares the
  key); a shard that leaves ``owned()`` without entering ``draining()`` is *lost* and closes
  ``lost_grace_s`` (1 s) later, the moment a graceful release takes to show in ``draining()``.
* **per account** (``AccountState``): ``new`` → listenKey POST (at most
  ``listenkey_concurrency`` in flight) → ``keyed`` → SUBSCRIBE confirmed on its connection →
  ``streaming`` → ``reconciling`` (REST reconciliation after every gap: start-up / new shard
  owner, reconnect, re-key; at most ``reconcile_concurrency`` at once; the synthetic events go
  through the same publisher) → ``streaming``. An expired or refused key (``listenKeyExpired``,
  a keepalive PUT answered -1125, or the key missing from ``LIST_SUBSCRIPTIONS``) is
  ``rekeying``: POST a new key, subscribe it, unsubscribe the old one, reconcile. ``blind``:
  the account's connection went silent (no data frame nor server ping for ``blind_after_s``).
* **connections** (``MuxConnection``, ``/private/stream``): accounts are packed onto groups of
  at most ``keys_per_connection``; every socket opening first acquires the process-wide
  ``ConnectBudget``; a failed open backs off (jittered, doubling to ``max_backoff_s``); a
  dropped socket is reopened and its keys resubscribed and reconciled; a socket older than
  ``connection_max_age_s`` is replaced (new socket subscribed to the same keys first, then the
  old one closed: overlapping duplicates share event ids); a silent socket is reopened, and an
  ERROR (userId, accountId, error) is logged per account when it is still silent after that.
* **keepalives**: ``KeepaliveScheduler`` on the manager's ``Clock`` (tests drive a manual or
  accelerated clock; the manager ticks every ``tick_s`` of real time and reads the clock).
* **handover**: once every account of a newly owned shard streams, ``shards.mark_ready``.
  ``close``/``stop``: ``shards.stop()`` first, sockets kept until the new owners are ready (or
  the drain deadline), then closed, then the publisher flushed.

``keys_per_connection == 1`` keeps the older one-socket-per-account mode (``AccountStream`` on
``/private/ws/<key>``) for comparison: shards apply, reconciliation does not.

``status()`` is the snapshot for tests, metrics and the bench: "every account streams" is
``status()["streaming"] == status()["wanted"]`` (metrics ``tradewire_stream_accounts_streaming``
and ``tradewire_stream_accounts_wanted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire import metrics
from tradewire.bus.base import Envelope
from tradewire.clock import Clock
from tradewire.config import Settings
from tradewire.errors import ListenKeyInvalid
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import log
from tradewire.store import users
from tradewire.store.crypto import SecretBox
from tradewire.streams.account_stream import AccountStream
from tradewire.streams.connect_budget import ConnectBudget
from tradewire.streams.connection import MuxClosed, MuxConnection
from tradewire.streams.keepalive import KeepaliveScheduler
from tradewire.streams.session import AccountRef, make_envelope
from tradewire.streams.shards import LocalShards, Shards, shard_of
from tradewire.trading.clients import ClientPool

logger = logging.getLogger("tradewire.streams")


# -- what the manager is given ----------------------------------------------------------------


@dataclass(frozen=True)
class AccountSpec:
    """One active account as listed (cheaply: nothing decrypted). ``fingerprint`` changes
    when its credentials change."""

    account_id: int
    user_id: int
    fingerprint: str


class AccountDirectory(Protocol):
    async def listing(self) -> Sequence[AccountSpec]:
        """Every active account of an active user (cheap: called every ``refresh_s``)."""
        ...

    def client(self, spec: AccountSpec) -> ExchangeClient:
        """The account's REST client (decrypts its secret; called for new/changed only)."""
        ...


class Publisher(Protocol):
    """What the manager needs of ``streams.publisher.BatchPublisher``."""

    async def submit(self, envelope: Envelope) -> None: ...

    async def flush(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class Reconciler(Protocol):
    """``streams.reconcile.Reconciler``: synthetic payloads for what a gap may have hidden."""

    async def reconcile(self, account: AccountRef, client: ExchangeClient) -> list[dict[str, Any]]:
        ...


class StoreDirectory:
    """``AccountDirectory`` over the database: one cheap listing query per refresh; a secret
    is decrypted only when an account is new or its credentials changed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox,
                 pool: ClientPool) -> None:
        self._sessions = sessions
        self._box = box
        self._pool = pool
        self._rows: dict[int, users.StreamAccountRow] = {}

    async def listing(self) -> Sequence[AccountSpec]:
        async with self._sessions() as session:
            rows = await users.stream_accounts(session)
        self._rows = {row.account_id: row for row in rows}
        return [AccountSpec(row.account_id, row.user_id, _fingerprint(row)) for row in rows]

    def client(self, spec: AccountSpec) -> ExchangeClient:
        row = self._rows[spec.account_id]
        return self._pool.get(row.account_id, row.api_key, self._box.decrypt(row.api_secret_enc))


def _fingerprint(row: users.StreamAccountRow) -> str:
    text = f"{row.api_key}\0{row.api_secret_enc}".encode()
    return hashlib.blake2b(text, digest_size=12).hexdigest()


@dataclass(frozen=True)
class StreamOptions:
    """The manager's knobs; ``from_settings`` maps the ``TRADEWIRE_`` settings."""

    keys_per_connection: int = 200
    subscribe_batch: int = 50
    control_msgs_per_s: float = 5.0
    connection_max_age_s: float = 23 * 3600
    connect_attempts: int = 300
    connect_window_s: float = 300.0
    keepalive_interval_s: float = 1800.0
    keepalive_max_per_s: float = 10.0
    listenkey_concurrency: int = 16
    reconcile_concurrency: int = 4
    blind_after_s: float = 600.0
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    handoff_timeout_s: float = 15.0
    stream_shards: int = 256
    refresh_s: float = 2.0  # account listing re-read (real seconds)
    tick_s: float = 0.1  # ownership, keepalives, rotation, liveness (real seconds)
    audit_interval_s: float = 300.0  # LIST_SUBSCRIPTIONS per connection (clock seconds)
    keepalive_retry_s: float = 30.0  # after a failed PUT (clock seconds)
    max_backoff_s: float = 30.0  # connect / account retries (real seconds)
    lost_grace_s: float = 1.0  # a shard gone from owned() and not draining: lost after this

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> StreamOptions:
        names = [name for name in cls.__dataclass_fields__ if hasattr(settings, name)]
        values: dict[str, Any] = {name: getattr(settings, name) for name in names}
        values.update(overrides)
        return cls(**values)


class AccountState(enum.StrEnum):
    NEW = "new"  # wanted, no listenKey yet
    KEYED = "keyed"  # has a key, not (yet/any more) subscribed on an open connection
    STREAMING = "streaming"  # key confirmed on an open connection
    REKEYING = "rekeying"  # replacing an expired/refused key
    RECONCILING = "reconciling"  # subscribed; REST reconciliation of the gap running
    BLIND = "blind"  # its connection stopped delivering (being repaired)


@dataclass(eq=False)
class _Account:
    spec: AccountSpec
    ref: AccountRef
    client: ExchangeClient
    shard: int
    state: AccountState = AccountState.NEW
    key: str | None = None
    old_key: str | None = None  # replaced, unsubscribed once the new one is confirmed
    group: _Group | None = None
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
class _Single:
    spec: AccountSpec
    stream: AccountStream
    task: asyncio.Task[None]


@dataclass(eq=False)
class _Group:
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


class StreamsManager:
    def __init__(
        self,
        directory: AccountDirectory,
        publisher: Publisher,
        ws_base_url: str,
        clock: Clock,
        *,
        options: StreamOptions | None = None,
        shards: Shards | None = None,
        reconciler: Reconciler | None = None,
        budget: ConnectBudget | None = None,
        timer: metrics.PublishTimer | None = None,
    ) -> None:
        self.options = options or StreamOptions()
        self._directory = directory
        self._publisher = publisher
        self._ws_base_url = ws_base_url.rstrip("/")
        self._clock = clock
        self.shards: Shards = shards or LocalShards(shards=self.options.stream_shards)
        self._reconciler = reconciler
        opts = self.options
        self._budget = budget or ConnectBudget(opts.connect_attempts, opts.connect_window_s)
        self._timer = timer
        self._keepalive = KeepaliveScheduler(
            round(opts.keepalive_interval_s * 1000), opts.keepalive_max_per_s)
        self._post_slots = asyncio.Semaphore(opts.listenkey_concurrency)
        self._put_slots = asyncio.Semaphore(opts.listenkey_concurrency)
        self._reconcile_slots = asyncio.Semaphore(opts.reconcile_concurrency)
        self._listing: dict[int, AccountSpec] | None = None
        self._listing_version = 0
        self._applied: tuple[Any, ...] | None = None
        self._shard_of: dict[int, int] = {}
        self._owned: frozenset[int] | None = None
        self._pending_ready: set[int] = set()
        self._gone: dict[int, float] = {}  # shard -> loop time it left owned() undrained
        self.accounts: dict[int, _Account] = {}
        self.groups: dict[int, _Group] = {}
        self._group_ids = 0
        self._conn_ids = 0
        self.activity: dict[int, int] = {}  # account id -> clock ms of its last event
        self._singles: dict[int, _Single] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._metrics_at = 0.0
        self._ready_checked_at = 0.0
        self.reconnects = 0
        self.rotations = 0
        self.rekeys = 0
        self.keepalives = 0
        self.listenkey_posts = 0
        self.reconciliations = 0
        self.synthetic_events = 0
        self.repair_failures = 0

    @classmethod
    def from_settings(cls, settings: Settings, directory: AccountDirectory,
                      publisher: Publisher, clock: Clock, **kwargs: Any) -> StreamsManager:
        options = kwargs.pop("options", None) or StreamOptions.from_settings(settings)
        return cls(directory, publisher, settings.ws_base_url, clock, options=options, **kwargs)

    @property
    def single_socket_mode(self) -> bool:
        return self.options.keys_per_connection == 1

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop``; then hand over gracefully and close."""
        await self.shards.start()
        publisher = asyncio.create_task(self._publisher.run(), name="streams-publisher")
        loops = [asyncio.create_task(self._refresh_loop(), name="streams-refresh"),
                 asyncio.create_task(self._tick_loop(), name="streams-tick")]
        try:
            await stop.wait()
            await self._handoff()
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_streams()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publisher.flush(), 10)
            with contextlib.suppress(Exception):
                await self._publisher.close()
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await publisher
            await self.shards.close()

    async def _handoff(self) -> None:
        """Release the shards; keep their sockets until the new owners are ready."""
        try:
            await self.shards.stop()
        except Exception as exc:
            log(logger, logging.ERROR, "releasing shards failed", error=repr(exc))
            return
        deadline = asyncio.get_running_loop().time() + self.options.handoff_timeout_s + 1
        while asyncio.get_running_loop().time() < deadline:
            self._apply()
            if not self.shards.draining() or not self._stream_count():
                return
            await asyncio.sleep(self.options.tick_s)

    async def close(self) -> None:
        """Graceful close outside ``run``: ``shards.stop()``, keep the sockets until the new
        owners are ready (or the drain deadline), then close them."""
        await self._handoff()
        await self._close_streams()

    async def _close_streams(self) -> None:
        groups = list(self.groups.values())
        for account_id in list(self.accounts):
            self._remove(account_id, unsubscribe=False)  # the sockets close next
        await asyncio.gather(*(self._dissolve(group) for group in groups),
                             return_exceptions=True)
        for account_id in list(self._singles):
            await self._stop_single(self._singles.pop(account_id))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, job: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(job)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- accounts wanted ---------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a DB hiccup must not touch the streams already up
                log(logger, logging.ERROR, "account refresh failed", error=repr(exc))
            await asyncio.sleep(self.options.refresh_s)

    async def refresh(self) -> None:
        """Re-read the account listing (cheap; nothing decrypted)."""
        specs = await self._directory.listing()
        listing = {spec.account_id: spec for spec in specs}
        if listing != self._listing:
            self._listing = listing
            self._listing_version += 1

    async def sync(self) -> None:
        """One refresh and one application of it (tests; ``run`` does this continuously)."""
        await self.refresh()
        self._apply()

    def _shard(self, account_id: int) -> int:
        shard = self._shard_of.get(account_id)
        if shard is None:
            shard = self._shard_of[account_id] = shard_of(account_id, self.shards.shards)
        return shard

    def _apply(self) -> None:
        """Start what is wanted and not streamed, stop what is streamed and not wanted."""
        owned_now = self.shards.owned()
        owned = None if owned_now is None else frozenset(owned_now)
        now = asyncio.get_running_loop().time()
        draining = self.shards.draining()
        keep = frozenset(
            shard for shard, until in draining.items()
            if now < until and not self.shards.ready_elsewhere(shard)
        )
        if owned is not None:
            keep |= self._in_grace(owned, draining, now)
        if owned != self._owned:
            if owned is not None:
                self._pending_ready |= owned - (self._owned or frozenset())
                self._pending_ready &= owned
            self._owned = owned
        signature = (self._listing_version, owned, keep)
        if signature == self._applied or self._listing is None:
            return
        self._applied = signature
        listing = self._listing
        wanted: dict[int, AccountSpec] = {}
        for account_id, spec in listing.items():
            shard = self._shard(account_id)
            if owned is None or shard in owned or shard in keep:
                wanted[account_id] = spec
        for account_id in list(self._current_ids()):
            still = wanted.get(account_id)
            if still is None or still != self._spec_of(account_id):
                self._stop(account_id)
        for account_id, spec in wanted.items():
            if account_id not in self.accounts and account_id not in self._singles:
                self._start(spec)

    def _in_grace(self, owned: frozenset[int], draining: dict[int, float],
                  now: float) -> frozenset[int]:
        """Shards that just left ``owned()`` without (yet) being in ``draining()``.

        A graceful release drops a shard from ``owned()`` a moment (one Redis round trip)
        before it enters ``draining()``; closing its sockets in that moment would open a gap
        the handover exists to avoid. Such a shard is kept ``lost_grace_s``: if it is handed
        over it shows up in ``draining()`` meanwhile, otherwise it was lost and closes then
        (keeping sockets a little longer is harmless: duplicates share event ids)."""
        previous = self._owned or frozenset()
        for shard in previous - owned:
            if shard not in draining:
                self._gone.setdefault(shard, now)
        grace = self.options.lost_grace_s
        for shard, since in list(self._gone.items()):
            if shard in owned or shard in draining or now >= since + grace:
                del self._gone[shard]
        return frozenset(self._gone)

    def _current_ids(self) -> list[int]:
        return [*self.accounts, *self._singles]

    def _spec_of(self, account_id: int) -> AccountSpec | None:
        account = self.accounts.get(account_id)
        if account is not None:
            return account.spec
        single = self._singles.get(account_id)
        return single.spec if single is not None else None

    def _start(self, spec: AccountSpec) -> None:
        try:
            client = self._directory.client(spec)
        except Exception as exc:
            log(logger, logging.ERROR, "account credentials unusable; not streamed",
                userId=spec.user_id, accountId=spec.account_id, error=repr(exc))
            return
        ref = AccountRef(spec.account_id, spec.user_id)
        if self.single_socket_mode:
            self._start_single(spec, ref, client)
            return
        account = _Account(spec, ref, client, self._shard(spec.account_id))
        self.accounts[spec.account_id] = account
        self._place(account)
        account.task = self._spawn(self._drive(account), f"account-{spec.account_id}")
        log(logger, logging.INFO, "stream started", userId=ref.user_id, accountId=ref.account_id)

    def _stop(self, account_id: int) -> None:
        single = self._singles.pop(account_id, None)
        if single is not None:
            self._spawn(self._stop_single(single), f"stop-{account_id}")
        else:
            self._remove(account_id)

    def _remove(self, account_id: int, *, unsubscribe: bool = True) -> None:
        """Stop streaming an account at once (its key is unsubscribed, never deleted)."""
        account = self.accounts.pop(account_id, None)
        if account is None:
            return
        account.removed = True
        account.wake.set()
        if account.task is not None:
            account.task.cancel()
        self._keepalive.remove(account_id)
        self.activity.pop(account_id, None)
        group = account.group
        account.group = None
        if group is not None:
            group.members.discard(account_id)
            if group.conn is not None and unsubscribe:
                for key in (account.key, account.old_key):
                    if key:
                        group.conn.unsubscribe(key)
            if not group.members:
                self._retire(group)
                self._spawn(self._dissolve(group), f"dissolve-{group.id}")
        log(logger, logging.INFO, "stream stopped", userId=account.ref.user_id,
            accountId=account_id)

    # -- one account -------------------------------------------------------------------------

    async def _drive(self, account: _Account) -> None:
        """Bring the account to ``streaming`` and keep it there; wakes on every change."""
        backoff = 0.5
        while not account.removed:
            account.wake.clear()
            try:
                await self._step(account)
                account.failures = 0
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except MuxClosed:
                pass  # its connection went away: the group reopens it and wakes us
            except Exception as exc:
                account.failures += 1
                level = logging.ERROR if account.failures == 3 else logging.WARNING
                log(logger, level, "user stream not streaming; retrying",
                    userId=account.ref.user_id, accountId=account.ref.account_id,
                    error=f"{type(exc).__name__}: {exc}", failures=account.failures)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.options.max_backoff_s)
                continue
            await account.wake.wait()

    async def _step(self, account: _Account) -> None:
        while not account.removed:
            if account.key is None or account.rekey:
                await self._take_key(account)
                continue
            group = account.group
            if group is None:
                group = self._place(account)
            conn = group.conn
            if conn is None or not conn.is_open:
                if account.state in (AccountState.STREAMING, AccountState.RECONCILING):
                    account.state = AccountState.KEYED
                return  # the group wakes its members once the socket is open
            if not conn.carries(account.key):
                if account.state is not AccountState.REKEYING:
                    account.state = AccountState.KEYED
                await conn.subscribe(account.key, account.ref)
                if conn is not group.conn or account.removed or account.rekey:
                    continue
            if account.old_key and account.old_key != account.key:
                conn.unsubscribe(account.old_key)
            account.old_key = None
            account.state = AccountState.STREAMING
            if account.reconcile:
                await self._reconcile(account)
            return

    async def _take_key(self, account: _Account) -> None:
        if account.key is not None:
            account.state = AccountState.REKEYING
        async with self._post_slots:
            key = await account.client.new_listen_key()
        self.listenkey_posts += 1
        metrics.STREAM_LISTENKEY_POSTS.inc()
        now = self._clock.now_ms()
        if account.key is None:
            self._keepalive.add(account.ref.account_id, now)
        else:
            self._keepalive.extended(account.ref.account_id, now)
            if key != account.key:
                account.old_key = account.old_key or account.key
        account.key = key
        account.rekey = False
        if account.state is AccountState.NEW:
            account.state = AccountState.KEYED

    def _needs_rekey(self, account: _Account, why: str) -> None:
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

    async def _reconcile(self, account: _Account) -> None:
        if self._reconciler is None:
            account.reconcile = False
            return
        account.state = AccountState.RECONCILING
        try:
            async with self._reconcile_slots:
                payloads = await self._reconciler.reconcile(account.ref, account.client)
            now = self._clock.now_ms()
            for payload in payloads:
                await self._publisher.submit(
                    make_envelope(account.ref, payload, now, synthetic=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.STREAM_RECONCILIATIONS.labels(outcome="error").inc()
            account.reconcile_failures += 1
            if account.reconcile_failures >= 3:  # give up on this gap; the account streams
                account.reconcile = False
                account.reconcile_failures = 0
                account.state = AccountState.STREAMING
                log(logger, logging.ERROR, "reconciliation failed; events of the gap may be "
                    "missing", userId=account.ref.user_id, accountId=account.ref.account_id,
                    error=repr(exc))
                return
            raise
        account.reconcile = False
        account.reconcile_failures = 0
        self.reconciliations += 1
        self.synthetic_events += len(payloads)
        metrics.STREAM_RECONCILIATIONS.labels(outcome="ok").inc()
        metrics.STREAM_SYNTHETIC.inc(len(payloads))
        if account.state is AccountState.RECONCILING:
            account.state = AccountState.STREAMING

    # -- connections -------------------------------------------------------------------------

    def _place(self, account: _Account) -> _Group:
        """The group with room (fullest first), or a new one."""
        limit = self.options.keys_per_connection
        candidates = [g for g in self.groups.values()
                      if not g.closing and len(g.members) < limit]
        if candidates:
            group = max(candidates, key=lambda g: (len(g.members), -g.id))
        else:
            self._group_ids += 1
            group = _Group(self._group_ids)
            self.groups[group.id] = group
            group.task = self._spawn(self._keep_open(group), f"group-{group.id}")
        group.members.add(account.ref.account_id)
        account.group = group
        return group

    def _new_connection(self) -> MuxConnection:
        self._conn_ids += 1
        opts = self.options
        return MuxConnection(
            self._conn_ids, self._ws_base_url, self._publisher.submit, self._clock,
            subscribe_batch=opts.subscribe_batch, control_msgs_per_s=opts.control_msgs_per_s,
            ping_interval_s=opts.ws_ping_interval_s, ping_timeout_s=opts.ws_ping_timeout_s,
            activity=self.activity, on_expired=self._on_expired,
            on_receipt=self._timer.received if self._timer is not None else None,
        )

    def _max_age_ms(self) -> int:
        """``connection_max_age_s``, up to 2 % earlier: sockets opened together (a start-up)
        do not all rotate in the same second."""
        return round(self.options.connection_max_age_s * 1000 * (1 - 0.02 * random.random()))

    async def _open(self, group: _Group) -> MuxConnection:
        """A new open socket for ``group``: budget first, backoff on failure."""
        backoff = 0.5
        while True:
            await self._budget.acquire()
            conn = self._new_connection()
            try:
                await conn.open()
                return conn
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log(logger, logging.WARNING, "stream connection failed; retrying",
                    group=group.id, error=f"{type(exc).__name__}: {exc}",
                    backoff_s=round(backoff, 2))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.options.max_backoff_s)

    async def _keep_open(self, group: _Group) -> None:
        """Keep one socket open for the group's accounts; reopen it when it drops."""
        while not group.closing:
            conn = await self._open(group)
            if group.closing:
                await conn.close()
                return
            if group.ever_open:
                self.reconnects += 1
                metrics.STREAM_RECONNECTS.inc()
            group.ever_open = True
            group.conn = conn
            group.audited_ms = self._clock.now_ms()
            group.max_age_ms = self._max_age_ms()
            self._wake_members(group)
            current = conn
            while True:
                await current.wait_closed()
                if group.conn is current or group.conn is None or group.closing:
                    break
                current = group.conn  # rotated: watch the new socket
            if group.closing:
                return
            group.conn = None
            log(logger, logging.WARNING, "stream connection lost; reopening", group=group.id,
                connection=current.id, accounts=len(group.members),
                error=repr(current.close_reason))
            for account_id in group.members:
                account = self.accounts.get(account_id)
                if account is not None:
                    account.reconcile = True  # events during the gap are lost: reconcile
                    if account.state is not AccountState.BLIND:
                        account.state = AccountState.KEYED
            self._wake_members(group)

    def _wake_members(self, group: _Group) -> None:
        for account_id in group.members:
            account = self.accounts.get(account_id)
            if account is not None:
                account.wake.set()

    async def _dissolve(self, group: _Group) -> None:
        self._retire(group)
        conn = group.conn
        if conn is not None:
            await conn.close()
        if group.task is not None and group.task is not asyncio.current_task():
            group.task.cancel()

    def _retire(self, group: _Group) -> None:
        """No account joins ``group`` any more (its socket closes next)."""
        group.closing = True
        self.groups.pop(group.id, None)

    async def _rotate(self, group: _Group) -> None:
        """A fresh socket with the same keys, confirmed, before the old one closes."""
        old = group.conn
        group.rotating = True
        try:
            new = await self._open(group)
            waits = []
            for account_id in list(group.members):
                account = self.accounts.get(account_id)
                if account is not None and account.key:
                    waits.append(new.subscribe(account.key, account.ref))
            try:
                await asyncio.gather(*waits)
            except Exception:
                await new.close()
                raise
            if group.conn is not old or group.closing or old is None:
                await new.close()  # the old one dropped meanwhile and was replaced
                return
            group.conn = new
            group.max_age_ms = self._max_age_ms()
            self.rotations += 1
            metrics.STREAM_ROTATIONS.inc()
            self._wake_members(group)  # keys that changed meanwhile are subscribed by them
            await old.close()
            log(logger, logging.INFO, "stream connection rotated", group=group.id,
                old=old.id, new=new.id, keys=len(waits))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log(logger, logging.WARNING, "connection rotation failed; retrying later",
                group=group.id, error=repr(exc))
        finally:
            group.rotating = False

    # -- the periodic work -------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log(logger, logging.ERROR, "streams tick failed", error=repr(exc))
            await asyncio.sleep(self.options.tick_s)

    async def tick(self) -> None:
        """Ownership, keepalives, rotation, liveness, readiness and metrics (one pass)."""
        self._apply()
        now = self._clock.now_ms()
        if not self.single_socket_mode:
            self._keepalives(now)
            for group in list(self.groups.values()):
                self._watch(group, now)
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._ready_checked_at >= 0.25:  # O(accounts): not every tick
            self._ready_checked_at = loop_now
            await self._mark_ready()
        if loop_now - self._metrics_at >= 1.0:
            self._metrics_at = loop_now
            self.export_metrics()

    def _keepalives(self, now: int) -> None:
        for account_id in self._keepalive.due(now):
            account = self.accounts.get(account_id)
            if account is None:
                self._keepalive.remove(account_id)
                continue
            if (account.put_busy or account.rekey or account.key is None
                    or now < account.put_retry_ms):
                continue
            account.put_busy = True
            self._spawn(self._put(account), f"keepalive-{account_id}")

    async def _put(self, account: _Account) -> None:
        try:
            async with self._put_slots:
                await account.client.keepalive_listen_key()
            self._keepalive.extended(account.ref.account_id, self._clock.now_ms())
            self.keepalives += 1
            metrics.STREAM_KEEPALIVES.labels(outcome="ok").inc()
        except ListenKeyInvalid:
            metrics.STREAM_KEEPALIVES.labels(outcome="invalid").inc()
            self._needs_rekey(account, "keepalive refused (-1125)")
        except Exception as exc:
            metrics.STREAM_KEEPALIVES.labels(outcome="error").inc()
            account.put_retry_ms = (self._clock.now_ms()
                                    + round(self.options.keepalive_retry_s * 1000))
            log(logger, logging.WARNING, "listenKey keepalive failed; retrying",
                userId=account.ref.user_id, accountId=account.ref.account_id, error=repr(exc))
        finally:
            account.put_busy = False

    def _watch(self, group: _Group, now: int) -> None:
        """Rotation, blindness and the subscription audit of one group's socket."""
        conn = group.conn
        if conn is None or not conn.is_open or conn.retiring or group.rotating or group.closing:
            return
        if conn.heard and group.blind_strikes:
            group.blind_strikes = 0  # the repaired socket delivers again
            for account_id in group.members:
                account = self.accounts.get(account_id)
                if account is not None:
                    account.blind = False
        if conn.age_ms(now) >= group.max_age_ms:
            group.rotating = True
            self._spawn(self._rotate(group), f"rotate-{group.id}")
            return
        if conn.silent_ms(now) > self.options.blind_after_s * 1000:
            self._repair_blind(group, conn)
            return
        if now - group.audited_ms >= self.options.audit_interval_s * 1000 and not group.auditing:
            group.auditing = True
            group.audited_ms = now
            self._spawn(self._audit(group, conn), f"audit-{group.id}")

    def _repair_blind(self, group: _Group, conn: MuxConnection) -> None:
        group.blind_strikes += 1
        silent_s = conn.silent_ms(self._clock.now_ms()) / 1000
        error = f"no frame nor ping for {silent_s:.0f} s"
        for account_id in group.members:
            account = self.accounts.get(account_id)
            if account is None:
                continue
            account.blind = True
            account.state = AccountState.BLIND
            if group.blind_strikes >= 2:
                self.repair_failures += 1
                log(logger, logging.ERROR, "user stream still blind after repair",
                    userId=account.ref.user_id, accountId=account_id, error=error)
        log(logger, logging.WARNING, "stream connection blind; reopening", group=group.id,
            connection=conn.id, accounts=len(group.members), error=error)
        conn.retiring = True  # watched no more; its group reopens it once closed
        self._spawn(conn.close(), f"close-blind-{conn.id}")

    async def _audit(self, group: _Group, conn: MuxConnection) -> None:
        """``LIST_SUBSCRIPTIONS``: a confirmed key the exchange no longer lists is re-keyed."""
        try:
            listed = await conn.list_subscriptions()
        except Exception as exc:
            log(logger, logging.WARNING, "subscription audit failed", group=group.id,
                error=repr(exc))
            return
        finally:
            group.auditing = False
        if group.conn is not conn:
            return
        for account_id in list(group.members):
            account = self.accounts.get(account_id)
            if account is None or not account.key or not conn.carries(account.key):
                continue
            if account.key not in listed:
                conn.forget(account.key)
                self._needs_rekey(account, "listenKey missing from LIST_SUBSCRIPTIONS")

    async def _mark_ready(self) -> None:
        """Tell the shards whose accounts all stream here (handover can finish)."""
        if not self._pending_ready or self._listing is None or self._applied is None:
            return
        waiting: dict[int, int] = {shard: 0 for shard in self._pending_ready}
        for account_id in self._listing:
            shard = self._shard(account_id)
            if shard in waiting and not self._is_streaming(account_id):
                waiting[shard] += 1
        for shard, not_yet in waiting.items():
            if not_yet == 0:
                self._pending_ready.discard(shard)
                try:
                    await self.shards.mark_ready(shard)
                except Exception as exc:
                    self._pending_ready.add(shard)
                    log(logger, logging.WARNING, "marking a shard ready failed", shard=shard,
                        error=repr(exc))

    # -- the one-socket-per-account mode -----------------------------------------------------

    def _start_single(self, spec: AccountSpec, ref: AccountRef, client: ExchangeClient) -> None:
        stream = AccountStream(ref, client, self._ws_base_url, self._publisher.submit,
                               self._clock, keepalive_s=self.options.keepalive_interval_s,
                               max_backoff_s=self.options.max_backoff_s)
        task = asyncio.create_task(stream.run(), name=f"account-{spec.account_id}")
        self._singles[spec.account_id] = _Single(spec, stream, task)
        log(logger, logging.INFO, "stream started", userId=ref.user_id, accountId=ref.account_id)

    async def _stop_single(self, single: _Single) -> None:
        single.stream.stop()
        single.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await single.task
        log(logger, logging.INFO, "stream stopped", userId=single.spec.user_id,
            accountId=single.spec.account_id)

    # -- status ------------------------------------------------------------------------------

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
        states = {state.value: 0 for state in AccountState}
        streaming = 0
        for account_id, account in self.accounts.items():
            states[(AccountState.BLIND if account.blind else account.state).value] += 1
            streaming += self._is_streaming(account_id)
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

    def export_metrics(self) -> dict[str, Any]:
        status = self.status()
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

