"""One account's life in the manager: started, driven to ``streaming``, re-keyed, reconciled,
stopped.

Each wanted account has one task (``_drive``) that brings it to ``streaming`` and keeps it
there, woken on every change (its group's socket opened or dropped, its key refused): take a
listenKey (POST; at most ``listenkey_concurrency`` in flight), SUBSCRIBE it on the group's
socket, unsubscribe a replaced key, then reconcile over REST when a gap may have hidden events
(start-up / new shard owner, reconnect, re-key; at most ``reconcile_concurrency`` at once; the
synthetic events go through the same publisher). A failing step is retried with a jittered,
doubling backoff; a stopped account is unsubscribed at once and never ``DELETE``d (a new owner
shares its key). ``keys_per_connection == 1`` runs the older one-socket-per-account
``AccountStream`` instead (no reconciliation there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from tradewire import metrics
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import log
from tradewire.streams.account_stream import AccountStream
from tradewire.streams.connection import MuxClosed
from tradewire.streams.directory import AccountSpec
from tradewire.streams.groups import ConnectionGroups
from tradewire.streams.session import AccountRef, make_envelope
from tradewire.streams.state import Account, AccountState, Single

KEYS_FIRST_MAX_WAIT_S = 30.0  # reconciliation waits at most this long for pending keys

logger = logging.getLogger("tradewire.streams")


class AccountDriver(ConnectionGroups):
    """Starting, driving and stopping accounts (module docstring)."""

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
        account = Account(spec, ref, client, self._shard(spec.account_id))
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

    async def _drive(self, account: Account) -> None:
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

    async def _step(self, account: Account) -> None:
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

    async def _take_key(self, account: Account) -> None:
        if account.key is not None:
            account.state = AccountState.REKEYING
        self._keying += 1
        self._keys_taken.clear()
        try:
            async with self._post_slots:
                key = await account.client.new_listen_key()
        finally:
            self._keying -= 1
            if not self._keying:
                self._keys_taken.set()
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

    async def _reconcile(self, account: Account) -> None:
        if self._reconciler is None:
            account.reconcile = False
            return
        account.state = AccountState.RECONCILING
        try:
            # streams first: while accounts wait for their listenKey (a new shard owner keying
            # hundreds), reconciliation waits (up to ``KEYS_FIRST_MAX_WAIT_S``), so its REST
            # weight (8 for a missed fill) does not spend the IP budget those 1-weight POSTs
            # need; with a pod's share of 2,400/min, 1,000 keys and 200 reconciliations did not
            # fit one minute and the last keys waited for the next (failover 60 s instead of 8)
            if not self._keys_taken.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEYS_FIRST_MAX_WAIT_S):
                        await self._keys_taken.wait()
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

    def _start_single(self, spec: AccountSpec, ref: AccountRef, client: ExchangeClient) -> None:
        stream = AccountStream(ref, client, self._ws_base_url, self._publisher.submit,
                               self._clock, keepalive_s=self.options.keepalive_interval_s,
                               max_backoff_s=self.options.max_backoff_s)
        task = asyncio.create_task(stream.run(), name=f"account-{spec.account_id}")
        self._singles[spec.account_id] = Single(spec, stream, task)
        log(logger, logging.INFO, "stream started", userId=ref.user_id, accountId=ref.account_id)

    async def _stop_single(self, single: Single) -> None:
        single.stream.stop()
        single.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await single.task
        log(logger, logging.INFO, "stream stopped", userId=single.spec.user_id,
            accountId=single.spec.account_id)
