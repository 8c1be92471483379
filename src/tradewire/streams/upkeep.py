"""The periodic checks of keys and sockets, run by the manager's tick (``_keepalives`` every
tick, ``_watch`` of each socket once per ``watch_interval_s``).

Nothing here waits on the exchange in the tick itself: each check spawns its own task.

* **keepalives**: the ``KeepaliveScheduler`` (on the manager's ``Clock``) hands out the keys due
  for their PUT, at most ``keepalive_max_per_s``; a PUT answered -1125 means the key is gone
  (re-key), another failure is retried ``keepalive_retry_s`` later.
* **rotation**: a socket older than its group's max age is rotated (``groups``).
* **blindness**: a socket without a data frame nor a server ping for ``blind_after_s`` is
  reopened and its accounts marked ``blind``; an ERROR (userId, accountId, error) is logged per
  account when the reopened socket is still silent.
* **audit**: every ``audit_interval_s`` a socket's ``LIST_SUBSCRIPTIONS``; a confirmed key the
  exchange no longer lists is re-keyed (it would otherwise never deliver again).
"""

from __future__ import annotations

import asyncio
import logging

from tradewire import metrics
from tradewire.errors import ListenKeyInvalid
from tradewire.logging import log
from tradewire.streams.connection import MuxConnection
from tradewire.streams.groups import ConnectionGroups
from tradewire.streams.state import Account, AccountState, Group

logger = logging.getLogger("tradewire.streams")
_GOLDEN = 0.6180339887498949


class Upkeep(ConnectionGroups):
    """Keepalive PUTs, rotation, blind repair and subscription audits (module docstring)."""

    def _keepalives(self, now: int) -> None:
        """Start the PUTs due now, spread over the tick: each costs ~1 ms of CPU in a few
        callbacks (the HTTP client), and several started together kept the event loop from
        the socket readers for a few ms every tick (publish latency p99 5 ms instead of < 1)."""
        scheduler = self._keepalive
        starting: list[Account] = []
        for account_id in scheduler.due(now):
            account = self.accounts.get(account_id)
            if account is None:
                scheduler.remove(account_id)
                continue
            if (account.put_busy or account.rekey or account.key is None
                    or now < account.put_retry_ms):
                continue  # handed out again ``retry_ms`` later (a re-key extends it anyway)
            account.put_busy = True
            scheduler.begin(account_id)  # never handed out again while this PUT is in flight
            starting.append(account)
        step = self.options.tick_s / len(starting) if starting else 0.0
        for n, account in enumerate(starting):
            self._spawn(self._put(account, n * step), f"keepalive-{account.ref.account_id}")

    async def _put(self, account: Account, delay_s: float = 0.0) -> None:
        """One PUT (after ``delay_s``); the scheduler hears how it ended (``extended`` or
        ``failed``), so a PUT waiting long on the client's budget is never doubled."""
        account_id = account.ref.account_id
        extended = False
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            async with self._put_slots:
                await account.client.keepalive_listen_key()
            extended = True
            self._keepalive.extended(account_id, self._clock.now_ms())
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
                userId=account.ref.user_id, accountId=account_id, error=repr(exc))
        finally:
            account.put_busy = False
            if not extended and self._keepalive.in_flight(account_id):
                # failed, refused (the re-key POST extends it) or cancelled: again later
                self._keepalive.failed(account_id, self._clock.now_ms())

    def _watch_due(self, now: int) -> None:
        """``_watch`` each group once per ``watch_interval_s`` (clock), at a phase of its own:
        25 sockets watched every tick were ~0.11 ms of every 0.1 s tick, time the socket
        readers waited; spread, a tick watches two or three. The phases are spread by the
        group id (golden-ratio steps), so groups opened together are not watched together.
        A group under blind repair is watched every tick: its accounts leave ``blind`` as
        soon as the reopened socket delivers."""
        every = max(1, round(self.options.watch_interval_s * 1000))
        for group in list(self.groups.values()):
            if now >= group.watch_ms or group.blind_strikes:
                phase = int((group.id * _GOLDEN) % 1.0 * every)
                group.watch_ms = now + every - (now - phase) % every
                self._watch(group, now)

    def _watch(self, group: Group, now: int) -> None:
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

    def _repair_blind(self, group: Group, conn: MuxConnection) -> None:
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

    async def _audit(self, group: Group, conn: MuxConnection) -> None:
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
