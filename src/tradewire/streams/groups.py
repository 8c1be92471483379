"""Packing accounts onto ``/private/stream`` sockets: one ``Group`` = one socket's accounts.

Thousands of accounts share few sockets (``keys_per_connection``, 200 by default), so the
socket's life is owned here, apart from any one account's: an account is *placed* in the
fullest group with room (few, full sockets), and each group has one task (``_keep_open``) that
keeps its socket open: every opening first acquires the process-wide ``ConnectBudget`` (the
exchange's per-IP connection limit), a failed open backs off (jittered, doubling to
``max_backoff_s``), and a dropped socket is reopened and its accounts woken to resubscribe and
reconcile the gap. A group whose last account left is *retired* (no account joins it any more)
and *dissolved* (socket closed). A socket older than ``connection_max_age_s`` (the exchange cuts
them at 24 h) is *rotated*: a new socket subscribed to the same keys first, then the old one
closed, so no event falls in between (the overlap's duplicates share event ids).
"""

from __future__ import annotations

import asyncio
import logging
import random

from tradewire import metrics
from tradewire.logging import log
from tradewire.streams.connection import MuxConnection
from tradewire.streams.state import Account, AccountState, Group, StreamsCore

logger = logging.getLogger("tradewire.streams")


class ConnectionGroups(StreamsCore):
    """Placing accounts on groups and keeping each group's socket open (module docstring)."""

    def _place(self, account: Account) -> Group:
        """The group with room (fullest first), or a new one."""
        limit = self.options.keys_per_connection
        candidates = [g for g in self.groups.values()
                      if not g.closing and len(g.members) < limit]
        if candidates:
            group = max(candidates, key=lambda g: (len(g.members), -g.id))
        else:
            self._group_ids += 1
            group = Group(self._group_ids)
            self.groups[group.id] = group
            group.task = self._spawn(self._keep_open(group), f"group-{group.id}")
        group.members.add(account.ref.account_id)
        account.group = group
        return group

    def _new_connection(self) -> MuxConnection:
        self._conn_ids += 1
        opts = self.options
        return MuxConnection(
            self._conn_ids, self._ws_base_url, self._publisher, self._clock,
            subscribe_batch=opts.subscribe_batch, control_msgs_per_s=opts.control_msgs_per_s,
            ping_interval_s=opts.ws_ping_interval_s, ping_timeout_s=opts.ws_ping_timeout_s,
            compression=opts.ws_compression,
            activity=self.activity, on_expired=self._on_expired,
            on_receipt=self._timer.received if self._timer is not None else None,
        )

    def _max_age_ms(self) -> int:
        """``connection_max_age_s``, up to 2 % earlier: sockets opened together (a start-up)
        do not all rotate in the same second."""
        return round(self.options.connection_max_age_s * 1000 * (1 - 0.02 * random.random()))

    async def _open(self, group: Group) -> MuxConnection:
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

    async def _keep_open(self, group: Group) -> None:
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

    async def _dissolve(self, group: Group) -> None:
        self._retire(group)
        conn = group.conn
        if conn is not None:
            await conn.close()
        if group.task is not None and group.task is not asyncio.current_task():
            group.task.cancel()

    def _retire(self, group: Group) -> None:
        """No account joins ``group`` any more (its socket closes next)."""
        group.closing = True
        self.groups.pop(group.id, None)

    async def _rotate(self, group: Group) -> None:
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
