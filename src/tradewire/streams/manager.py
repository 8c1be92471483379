"""The streams role (Layer 1): every active account of the owned shards streams, on few sockets.

``StreamsManager.run(stop)`` keeps, until ``stop``:

* **wanted accounts** = active accounts (``AccountDirectory.listing()``, re-read every
  ``refresh_s``; credentials are decrypted only for accounts new or changed) whose shard this
  pod owns (``Shards.owned()``, polled every tick), plus those of shards it is handing over
  (``draining()``) until the new owner is ready or the drain deadline passed. An account
  leaving the wanted set is unsubscribed at once (never ``DELETE``d: the new owner shares the
  key); a shard that leaves ``owned()`` without entering ``draining()`` is *lost* and its
  sockets close (after ``lost_grace_s``, 0 by default: a graceful release enters
  ``draining()`` the moment it leaves ``owned()``).
* **per account** (``AccountState``, ``accounts``): ``new`` → listenKey POST → ``keyed`` →
  SUBSCRIBE confirmed on its connection → ``streaming`` → ``reconciling`` (after every gap) →
  ``streaming``; ``rekeying`` when its key expired or was refused; ``blind`` when its socket
  went silent.
* **connections** (``groups``): accounts packed onto ``MuxConnection`` groups of at most
  ``keys_per_connection``, opened under the process-wide ``ConnectBudget``, reopened when they
  drop, rotated before the exchange's 24 h cut.
* **upkeep** (``upkeep``, every ``tick_s``): keepalive PUTs (``KeepaliveScheduler`` on the
  manager's ``Clock``: tests drive a manual or accelerated clock), rotation, blind repair,
  ``LIST_SUBSCRIPTIONS`` audits.
* **handover**: once every account of a newly owned shard streams (or of a shard re-acquired
  under a new epoch), ``shards.mark_ready``. ``close``/``stop``: ``shards.stop()`` first,
  sockets kept until the new owners are ready (or the drain deadline), then closed, then the
  publisher flushed.

This module owns that lifecycle and the mapping from ownership and listing to the wanted set;
the parts it is assembled from are in ``state`` (shared records), ``groups``, ``accounts``,
``upkeep`` and ``status`` (``status()``, metrics). ``keys_per_connection == 1`` keeps the older
one-socket-per-account mode (``AccountStream``) for comparison: shards apply, reconciliation
does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

from tradewire import heap, metrics
from tradewire.clock import Clock
from tradewire.config import Settings
from tradewire.logging import log
from tradewire.streams.accounts import AccountDriver
from tradewire.streams.connect_budget import ConnectBudget
from tradewire.streams.directory import AccountDirectory, AccountSpec, StoreDirectory
from tradewire.streams.keepalive import KeepaliveScheduler
from tradewire.streams.options import StreamOptions
from tradewire.streams.shards import LocalShards, Shards
from tradewire.streams.state import (
    Account,
    AccountState,
    Group,
    Publisher,
    Reconciler,
    Single,
)
from tradewire.streams.status import StatusView
from tradewire.streams.upkeep import Upkeep

__all__ = [
    "AccountDirectory",
    "AccountSpec",
    "AccountState",
    "Publisher",
    "Reconciler",
    "StoreDirectory",
    "StreamOptions",
    "StreamsManager",
]

logger = logging.getLogger("tradewire.streams")

FREEZE_MIN_ACCOUNTS = 500  # below that a full collection is short: nothing frozen (tests)


class StreamsManager(AccountDriver, Upkeep, StatusView):
    """Owned shards -> wanted accounts -> streaming (module docstring)."""

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
        self._keying = 0  # accounts waiting for or taking a listenKey (POST)
        self._keys_taken = asyncio.Event()  # set while _keying == 0
        self._keys_taken.set()
        self._listing: dict[int, AccountSpec] | None = None
        self._listing_version = 0
        self._listed_specs: Sequence[AccountSpec] | None = None  # the directory's last answer
        self._applied: tuple[Any, ...] | None = None
        self._shard_of: dict[int, int] = {}
        self._owned: frozenset[int] | None = None
        self._pending_ready: set[int] = set()
        self._epochs: dict[int, int | None] = {}  # owned shard -> epoch last seen
        self._gone: dict[int, float] = {}  # shard -> loop time it left owned() undrained
        self.accounts: dict[int, Account] = {}
        self.groups: dict[int, Group] = {}
        self._group_ids = 0
        self._conn_ids = 0
        self.activity: dict[int, int] = {}  # account id -> clock ms of its last event
        self._singles: dict[int, Single] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._metrics_at = 0.0
        self._frozen_for = 0  # wanted accounts at the last ``heap.freeze`` (``_settle_heap``)
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
                await self._directory.aclose()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publisher.flush(), 10)
            with contextlib.suppress(Exception):
                await self._publisher.close()
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await publisher
            await self.shards.close()

    def keying_estimate_s(self) -> float:
        """The longest a new owner may need to give this pod's accounts listenKeys: one POST
        (weight 1) each within the IP weight per minute, and a fixed window may be spent when
        it starts: 60 s per started ``ip_weight_per_minute`` accounts (1,000 accounts at
        2,400/min: 60 s). A shard handed over drains ``handoff_timeout_s`` + this at most; its
        sockets close as soon as the new owner marks it ready, usually far sooner."""
        held = len(self.accounts) + len(self._singles)
        return 60.0 * math.ceil(held / max(1, self.options.ip_weight_per_minute))

    async def _handoff(self) -> None:
        """Release the shards; keep their sockets until the new owners are ready."""
        keying_s = self.keying_estimate_s()
        self.shards.expect_keying(keying_s)
        try:
            await self.shards.stop()
        except Exception as exc:
            log(logger, logging.ERROR, "releasing shards failed", error=repr(exc))
            return
        deadline = (asyncio.get_running_loop().time() + self.options.handoff_timeout_s
                    + keying_s + 1)
        while asyncio.get_running_loop().time() < deadline:
            self._apply()
            if not self.shards.draining() or not self._stream_count():
                return
            await asyncio.sleep(self.options.tick_s)

    async def close(self) -> None:
        """Graceful close outside ``run``: ``shards.stop()``, keep the sockets until the new
        owners are ready (or the drain deadline), then close them and release what the
        directory holds (its database connection), as ``run`` does on its way out."""
        await self._handoff()
        await self._close_streams()
        with contextlib.suppress(Exception):
            await self._directory.aclose()

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
        if specs is self._listed_specs:
            return  # the directory says nothing changed (the same list object)
        self._listed_specs = specs
        listing = {spec.account_id: spec for spec in specs}
        if listing != self._listing:  # unchanged specs are the same objects: a cheap compare
            self._listing = listing
            self._listing_version += 1

    async def sync(self) -> None:
        """One refresh and one application of it (tests; ``run`` does this continuously)."""
        await self.refresh()
        self._apply()

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
        self._track_owned(owned)
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

    def _track_owned(self, owned: frozenset[int] | None) -> None:
        """Shards to mark ready once their accounts stream: those newly owned, and those held
        under a new epoch (lost and taken again between two ticks, so still in ``owned()``:
        their ready mark names the old epoch).

        Nothing to do when ``owned`` *is* the previous answer: ``RedisShards`` hands out the
        same frozenset until a lease changes (``RedisOwnership.owned``), so the walk over
        every held shard's epoch (~60 µs for 256, every tick) runs once per lease round."""
        if owned is not None and owned is self._owned:
            return
        if owned is not None and owned != self._owned:
            self._pending_ready |= owned - (self._owned or frozenset())
            self._pending_ready &= owned
            for shard in [s for s in self._epochs if s not in owned]:
                del self._epochs[shard]
        self._owned = owned
        if owned is None:
            return
        epochs = self._epochs
        for shard in owned:
            epoch = self.shards.epoch(shard)
            if epochs.get(shard, -1) != epoch:
                epochs[shard] = epoch
                self._pending_ready.add(shard)

    def _in_grace(self, owned: frozenset[int], draining: dict[int, float],
                  now: float) -> frozenset[int]:
        """Shards that just left ``owned()`` without (yet) being in ``draining()``.

        ``RedisShards`` puts a released shard into ``draining()`` the moment it leaves
        ``owned()``, so such a shard is lost and ``lost_grace_s`` is 0 by default. A
        ``Shards`` whose release shows up in ``draining()`` a little later can be given a
        grace: the shard is kept that long (keeping sockets a little longer is harmless:
        duplicates share event ids), and closes then unless it showed up in ``draining()``."""
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
        self.shards.expect_keying(self.keying_estimate_s())
        self._apply()
        now = self._clock.now_ms()
        if not self.single_socket_mode:
            self._keepalives(now)
            self._watch_due(now)
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._ready_checked_at >= 0.25:  # O(accounts): not every tick
            self._ready_checked_at = loop_now
            await self._mark_ready()
        if loop_now - self._metrics_at >= 1.0:
            self._metrics_at = loop_now
            self._settle_heap(await self.export_metrics())

    def _settle_heap(self, status: dict[str, Any]) -> None:
        """Once every wanted account streams (and their number grew by a tenth since the last
        time), move what is alive into the collector's permanent generation (``heap.freeze``).
        Thousands of accounts (their clients, sockets, tasks) are long-lived; left in the old
        generation, every full collection walked all of them, a stall of most of a second
        with 5,000 accounts, triggered by nothing more than the per-event garbage. Frozen
        objects are still freed by reference counting; only cycles among them stay (accounts
        stopped later leak only what they hold in cycles)."""
        wanted = status["wanted"]
        if (wanted >= FREEZE_MIN_ACCOUNTS and status["streaming"] == wanted
                and wanted >= self._frozen_for * 1.1):
            self._frozen_for = wanted
            heap.freeze()

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
