"""BatchPublisher: submitted envelopes reach the bus in submission order, none is lost even when
the bus fails, batches form by themselves while one is in flight, a full FIFO pushes back on
``submit``, ``flush``/``close`` wait until everything is on the bus.

The bus is the in-memory ``EmbeddedBus``; ``Gated`` wraps its ``publish_many`` to hold a batch
in flight or to fail a given number of calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from tradewire.bus.base import Envelope
from tradewire.bus.embedded import EmbeddedBus
from tradewire.streams.publisher import BatchPublisher


def envelope(seq: int, account_id: int = 1, symbol: str = "BTCUSDT") -> Envelope:
    return Envelope(
        event_id=f"ev-{account_id}-{seq}", account_id=account_id, user_id=account_id,
        symbol=symbol, received_ms=1_767_000_000_000 + seq, event={"seq": seq},
    )


class Gated:
    """``bus.publish_many`` that fails the first ``fail`` calls and, when ``gate`` is cleared,
    holds each call in flight until it is set again."""

    def __init__(self, bus: EmbeddedBus, fail: int = 0) -> None:
        self.bus = bus
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[int] = []  # size of every call, failed ones included
        self.entered = asyncio.Event()

    async def __call__(self, envelopes: Sequence[Envelope]) -> list[str]:
        self.calls.append(len(envelopes))
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("bus down")
        return await self.bus.publish_many(envelopes)


async def consumed(bus: EmbeddedBus) -> list[int]:
    """Sequence numbers of everything on the bus, per partition fetch order (one key here)."""
    out: list[int] = []
    while batch := await bus.fetch("c", 1000, 0):
        out += [Envelope.decode(m.body).event["seq"] for m in batch]
    return out


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def bus() -> EmbeddedBus:
    return EmbeddedBus(partitions=4)


@pytest.fixture
async def running(bus: EmbeddedBus) -> AsyncIterator[tuple[BatchPublisher, Gated]]:
    gated = Gated(bus)
    publisher = BatchPublisher(gated, max_batch=50, max_pending=200, retry_initial_s=0.001)
    task = asyncio.create_task(publisher.run())
    yield publisher, gated
    gated.gate.set()
    await publisher.close()
    await task


async def test_order_is_kept_and_nothing_is_lost_across_failures(bus: EmbeddedBus) -> None:
    """2,000 envelopes, the bus fails the first five calls: every envelope arrives exactly once,
    in submission order, and the counters say so."""
    gated = Gated(bus, fail=5)
    seen: list[float] = []
    publisher = BatchPublisher(
        gated, max_batch=64, max_pending=500, retry_initial_s=0.001, observe=seen.append
    )
    task = asyncio.create_task(publisher.run())
    for seq in range(2_000):
        await publisher.submit(envelope(seq))
    await publisher.flush()
    assert await consumed(bus) == list(range(2_000))
    assert publisher.published == 2_000 and publisher.pending == 0
    assert publisher.failures == 5
    assert publisher.batches == len(gated.calls) - 5
    assert max(gated.calls) <= 64
    assert gated.calls[:6] == [gated.calls[0]] * 6  # the failed batch is retried as it was
    assert len(seen) == 2_000 and min(seen) >= 0
    await publisher.close()
    await task


async def test_per_key_order_holds_across_many_keys(bus: EmbeddedBus) -> None:
    """Interleaved keys: each key's envelopes come out of its partition in submission order."""
    publisher = BatchPublisher(bus.publish_many, max_batch=7)
    task = asyncio.create_task(publisher.run())
    for seq in range(300):
        await publisher.submit(envelope(seq, account_id=seq % 5, symbol=f"S{seq % 3}"))
    await publisher.close()
    await task
    per_key: dict[str, list[int]] = {}
    while batch := await bus.fetch("c", 1000, 0):
        for message in batch:
            env = Envelope.decode(message.body)
            per_key.setdefault(env.key, []).append(env.event["seq"])
    assert sum(len(v) for v in per_key.values()) == 300
    assert all(seqs == sorted(seqs) for seqs in per_key.values())


async def test_a_batch_accumulates_while_one_is_in_flight(
    running: tuple[BatchPublisher, Gated], bus: EmbeddedBus
) -> None:
    """No fixed wait: a lone envelope is sent at once; what arrives while it is in flight is the
    next batch (up to ``max_batch``), sent as soon as the first one is acked."""
    publisher, gated = running
    gated.gate.clear()
    await publisher.submit(envelope(0))
    await gated.entered.wait()
    assert gated.calls == [1]
    for seq in range(1, 121):
        await publisher.submit(envelope(seq))
    assert publisher.pending == 121
    gated.gate.set()
    await publisher.flush()
    assert gated.calls == [1, 50, 50, 20]
    assert await consumed(bus) == list(range(121))


async def test_a_full_fifo_pushes_back_on_submit(running: tuple[BatchPublisher, Gated]) -> None:
    """With ``max_pending`` envelopes not yet on the bus, ``submit`` waits; it resumes when a
    batch is acked."""
    publisher, gated = running
    gated.gate.clear()
    for seq in range(200):
        await publisher.submit(envelope(seq))  # returns at once: below max_pending
    blocked = asyncio.create_task(publisher.submit(envelope(200)))
    await settle()
    assert not blocked.done()
    assert publisher.pending == 200
    gated.gate.set()
    await blocked
    await publisher.flush()
    assert publisher.published == 201


async def test_offer_takes_at_once_says_when_full_and_room_waits_for_an_ack(
    running: tuple[BatchPublisher, Gated],
) -> None:
    """``offer`` (a socket's ``data_received`` cannot await) always takes the envelope; it
    returns False from the ``max_pending``-th on, and ``room()`` returns once a batch is acked.
    A call slot being free, the call starts within the same loop turn's callbacks: one
    ``sleep(0)`` later it has begun (no wake-up of the flusher task in between)."""
    publisher, gated = running
    gated.gate.clear()
    assert publisher.offer(envelope(0)) is True
    await asyncio.sleep(0)
    assert gated.calls == [1]
    assert all(publisher.offer(envelope(seq)) for seq in range(1, 199))
    assert publisher.offer(envelope(199)) is False  # the 200th not on the bus: full
    assert publisher.offer(envelope(200)) is False  # still taken, still full
    waiting = asyncio.create_task(publisher.room())
    await settle()
    assert not waiting.done() and publisher.pending == 201
    gated.gate.set()
    await waiting
    await publisher.flush()
    assert publisher.published == 201


async def test_what_arrives_while_a_call_is_in_flight_leaves_together_at_the_turn_end(
    bus: EmbeddedBus,
) -> None:
    """A call in flight and free slots: the envelopes offered in one loop turn (a socket
    backlog after the process was descheduled) go as one call at the end of the turn, not as
    one call each; the first one, offered with nothing in flight, went at once."""
    gated = Gated(bus)
    gated.gate.clear()
    publisher = BatchPublisher(gated, max_in_flight=4)
    task = asyncio.create_task(publisher.run())
    await settle()
    publisher.offer(envelope(0, account_id=0))
    for seq in range(1, 6):
        publisher.offer(envelope(seq, account_id=seq))
    await asyncio.sleep(0)
    assert gated.calls == [1]  # the first call began; the backlog waits for the turn's end
    await settle()
    assert gated.calls == [1, 5]
    gated.gate.set()
    await publisher.flush()
    assert publisher.published == 6 and publisher.batches == 2
    await publisher.close()
    await task


async def test_flush_waits_for_queued_and_in_flight_envelopes(
    running: tuple[BatchPublisher, Gated], bus: EmbeddedBus
) -> None:
    """``flush`` returns only once everything submitted before it is on the bus."""
    publisher, gated = running
    gated.gate.clear()
    for seq in range(80):
        await publisher.submit(envelope(seq))
    flushing = asyncio.create_task(publisher.flush())
    await settle()
    assert not flushing.done()
    assert await bus.undelivered() == 0
    gated.gate.set()
    await flushing
    assert await bus.undelivered() == 80
    await publisher.flush()  # nothing pending: returns at once


async def test_close_sends_the_rest_and_refuses_new_envelopes(bus: EmbeddedBus) -> None:
    """``close`` flushes and ends ``run``; afterwards ``submit`` raises. Without ``run``,
    ``close`` sends the rest itself."""
    publisher = BatchPublisher(bus.publish_many, max_batch=10)
    task = asyncio.create_task(publisher.run())
    await settle()  # run is waiting for work
    for seq in range(25):
        await publisher.submit(envelope(seq))
    await publisher.close()
    assert task.done()
    assert await consumed(bus) == list(range(25))
    with pytest.raises(RuntimeError):
        await publisher.submit(envelope(99))
    with pytest.raises(RuntimeError):
        publisher.offer(envelope(99))
    await publisher.room()  # returns at once once closed (offer then raises)

    never_run = BatchPublisher(bus.publish_many, max_batch=10)
    for seq in range(25):
        await never_run.submit(envelope(seq))
    await never_run.close()
    assert never_run.published == 25 and never_run.batches == 3
    assert await consumed(bus) == list(range(25))


async def test_retry_delays_grow_to_the_cap_and_failures_are_logged(
    bus: EmbeddedBus, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed batches are retried after 0.1 s, doubling up to 5 s, forever; each failure is
    logged with the error."""
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    gated = Gated(bus, fail=9)
    publisher = BatchPublisher(gated, sleep=no_sleep)
    await publisher.submit(envelope(0))
    with caplog.at_level(logging.WARNING, logger="tradewire.streams.publisher"):
        await publisher.close()
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert publisher.failures == 9 and publisher.published == 1
    assert sum("publishing a batch failed" in r.getMessage() for r in caplog.records) == 9
    assert await consumed(bus) == [0]


async def test_run_twice_and_invalid_sizes_are_refused(bus: EmbeddedBus) -> None:
    publisher = BatchPublisher(bus.publish_many)
    task = asyncio.create_task(publisher.run())
    await settle()
    with pytest.raises(RuntimeError):
        await publisher.run()
    await publisher.close()
    await task
    with pytest.raises(ValueError):
        BatchPublisher(bus.publish_many, max_batch=0)


class PerCall:
    """``bus.publish_many`` whose every call waits until the test answers it: ``ok(n)`` puts
    call ``n``'s envelopes on the bus, ``fail(n)`` makes it raise (the publisher retries with
    a new call)."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.calls: list[tuple[list[Envelope], asyncio.Future[bool]]] = []
        self.changed = asyncio.Event()

    async def __call__(self, envelopes: Sequence[Envelope]) -> list[str]:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.calls.append((list(envelopes), answer))
        self.changed.set()
        if not await answer:
            raise ConnectionError("bus down")
        return await self.bus.publish_many(envelopes)

    def seqs(self, n: int) -> list[int]:
        return [e.event["seq"] for e in self.calls[n][0]]

    def open_calls(self) -> list[int]:
        return [n for n, (_, answer) in enumerate(self.calls) if not answer.done()]

    def ok(self, n: int) -> None:
        self.calls[n][1].set_result(True)

    def fail(self, n: int) -> None:
        self.calls[n][1].set_result(False)


def by_key(seqs_and_keys: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for seq, key in seqs_and_keys:
        out.setdefault(key, []).append(seq)
    return out


async def on_bus(bus: EmbeddedBus) -> list[tuple[int, int]]:
    """(seq, account id) of everything on the bus, per partition in stream order."""
    out: list[tuple[int, int]] = []
    while batch := await bus.fetch("c", 1000, 0):
        out += [(e.event["seq"], e.account_id) for e in map(Envelope.decode,
                                                             (m.body for m in batch))]
    return out


async def test_calls_of_different_keys_fly_together_and_a_busy_key_waits(
    bus: EmbeddedBus,
) -> None:
    """``max_in_flight=3``: envelopes of three accounts go out in three calls at once, without
    waiting for each other's ack; the next envelope of an account whose call is in flight waits
    at the head of the FIFO (everything behind it too) until that call is acked."""
    calls = PerCall(bus)
    publisher = BatchPublisher(calls, max_in_flight=3, retry_initial_s=0.001)
    task = asyncio.create_task(publisher.run())
    for seq, account in enumerate((1, 2, 3)):
        await publisher.submit(envelope(seq, account_id=account))
        await settle()
    assert calls.open_calls() == [0, 1, 2] and [calls.seqs(n) for n in range(3)] == [[0], [1], [2]]
    await publisher.submit(envelope(3, account_id=4))  # every call slot is busy: it waits
    await settle()
    assert len(calls.calls) == 3
    calls.ok(2)  # account 3's call acked: a slot is free, account 4 goes
    await settle()
    assert calls.seqs(3) == [3]
    await publisher.submit(envelope(4, account_id=1))  # account 1 is still in flight (call 0)
    await publisher.submit(envelope(5, account_id=5))  # behind it in the FIFO
    calls.ok(3)
    await settle()
    assert len(calls.calls) == 4  # a free slot, but the head's key is busy
    calls.ok(0)
    await settle()
    assert calls.seqs(4) == [4, 5]
    calls.ok(1)
    calls.ok(4)
    await publisher.flush()
    assert sorted(seq for seq, _ in await on_bus(bus)) == list(range(6))
    await publisher.close()
    await task


async def test_a_failed_call_keeps_its_keys_order_while_other_keys_flow(
    bus: EmbeddedBus,
) -> None:
    """A call that fails is retried; meanwhile calls of other accounts go on, and nothing of
    the failed call's account overtakes it: per account, the bus holds submission order."""
    calls = PerCall(bus)
    async def at_once(seconds: float) -> None:
        await asyncio.sleep(0)

    publisher = BatchPublisher(calls, max_in_flight=2, max_batch=3, sleep=at_once)
    task = asyncio.create_task(publisher.run())
    await publisher.submit(envelope(0, account_id=1))
    await settle()
    for seq, account in enumerate((2, 2, 1, 2, 1), start=1):
        await publisher.submit(envelope(seq, account_id=account))
    await settle()
    assert calls.open_calls() == [0, 1] and calls.seqs(1) == [1, 2]  # stops before account 1
    calls.fail(0)
    await settle()
    calls.ok(1)
    await settle()
    # the retry of call 0 is in flight; account 1's next envelope (3) waits for it, and
    # account 2's (4) behind it
    assert calls.open_calls() == [2] and calls.seqs(2) == [0]
    calls.ok(2)
    await settle()
    while open_ := calls.open_calls():
        for n in open_:
            calls.ok(n)
        await settle()
    await publisher.flush()
    assert by_key(await on_bus(bus)) == {1: [0, 3, 5], 2: [1, 2, 4]}
    assert publisher.failures == 1 and publisher.published == 6
    await publisher.close()
    await task


async def test_flush_waits_for_an_earlier_call_still_in_flight(bus: EmbeddedBus) -> None:
    """A later call acked first does not end ``flush``: it waits for every envelope submitted
    before it."""
    calls = PerCall(bus)
    publisher = BatchPublisher(calls, max_in_flight=2)
    task = asyncio.create_task(publisher.run())
    await publisher.submit(envelope(0, account_id=1))
    await settle()
    await publisher.submit(envelope(1, account_id=2))
    await settle()
    flushing = asyncio.create_task(publisher.flush())
    calls.ok(1)
    await settle()
    assert not flushing.done() and publisher.pending == 1
    calls.ok(0)
    await flushing
    await publisher.close()
    await task


async def test_a_cancelled_run_puts_calls_in_flight_back_in_order(bus: EmbeddedBus) -> None:
    """Cancelling ``run`` cancels its calls in flight; their envelopes are back at the head of
    the FIFO in submission order, and ``close`` (or a new ``run``) sends them."""
    calls = PerCall(bus)
    publisher = BatchPublisher(calls, max_in_flight=2)
    task = asyncio.create_task(publisher.run())
    for seq in range(2):
        await publisher.submit(envelope(seq, account_id=seq))
        await settle()
    await publisher.submit(envelope(2, account_id=0))
    assert calls.open_calls() == [0, 1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert publisher.pending == 3
    closing = asyncio.create_task(publisher.close())
    while not closing.done():
        await settle()
        for n in calls.open_calls():
            calls.ok(n)
    assert [calls.seqs(n) for n in range(2, len(calls.calls))] == [[0, 1, 2]]  # one batch
    assert by_key(await on_bus(bus)) == {0: [0, 2], 1: [1]}


class Starter:
    """A ``PublishStarter.start_publish``: takes each batch at once (unless ``accept`` is
    False: then it declines and the publisher awaits ``publish_many``) and reports when the
    test says: ``await ok(n)`` puts call ``n``'s envelopes on the bus and reports success,
    ``fail(n)`` reports an error."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.accept = True
        self.calls: list[tuple[list[Envelope], Callable[[BaseException | None], None]]] = []
        self.declined = 0

    def __call__(self, envelopes: Sequence[Envelope],
                 on_done: Callable[[BaseException | None], None]) -> bool:
        if not self.accept:
            self.declined += 1
            return False
        self.calls.append((list(envelopes), on_done))
        return True

    def seqs(self, n: int) -> list[int]:
        return [e.event["seq"] for e in self.calls[n][0]]

    async def ok(self, n: int) -> None:
        await self.bus.publish_many(self.calls[n][0])
        self.calls[n][1](None)

    def fail(self, n: int) -> None:
        self.calls[n][1](ConnectionError("Redis connection lost"))


async def test_a_started_call_is_written_in_the_offer_itself_and_acked_by_its_report(
    bus: EmbeddedBus,
) -> None:
    """With ``start``, the batch is handed to the bus inside ``offer`` (no task, no loop turn)
    and the report of success is the ack: counted, observed, the next batch started at once
    from inside the report. ``publish_many`` is not called."""
    calls, start = PerCall(bus), Starter(bus)
    observed: list[float] = []
    publisher = BatchPublisher(calls, start=start, observe=observed.append, max_in_flight=1)
    task = asyncio.create_task(publisher.run())
    await settle()
    publisher.offer(envelope(0))
    assert [start.seqs(n) for n in range(len(start.calls))] == [[0]]  # before any await
    publisher.offer(envelope(1))
    publisher.offer(envelope(2))
    assert len(start.calls) == 1  # one call in flight (max_in_flight=1): the rest queue
    await start.ok(0)
    assert start.seqs(1) == [1, 2]  # started inside the report of call 0
    assert publisher.published == 1 and len(observed) == 1
    await start.ok(1)
    await publisher.flush()
    assert publisher.published == 3 and publisher.batches == 2 and calls.calls == []
    assert await consumed(bus) == [0, 1, 2]
    await publisher.close()
    await task


async def test_a_declined_start_falls_back_to_publish_many(bus: EmbeddedBus) -> None:
    """``start`` returning False (the bus is not connected yet) costs nothing: the same batch
    goes through an awaited ``publish_many`` call."""
    start = Starter(bus)
    start.accept = False
    gated = Gated(bus)
    publisher = BatchPublisher(gated, start=start)
    task = asyncio.create_task(publisher.run())
    for seq in range(3):
        publisher.offer(envelope(seq))
    await publisher.flush()
    assert start.declined >= 1 and start.calls == [] and sum(gated.calls) == 3
    assert await consumed(bus) == [0, 1, 2]
    await publisher.close()
    await task


async def test_a_started_call_that_fails_is_retried_and_its_key_waits_for_it(
    bus: EmbeddedBus,
) -> None:
    """A started call reported failed is logged, counted, and retried (same envelopes, through
    ``publish_many``, after ``retry_initial_s``); until it lands, nothing of its accounts
    overtakes it, while other accounts' calls go on."""
    calls, start = PerCall(bus), Starter(bus)
    slept: list[float] = []

    async def at_once(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    publisher = BatchPublisher(calls, start=start, max_in_flight=2, sleep=at_once,
                               retry_initial_s=0.25)
    task = asyncio.create_task(publisher.run())
    await settle()
    publisher.offer(envelope(0, account_id=1))
    publisher.offer(envelope(1, account_id=2))  # the turn's end: a second started call
    await settle()
    assert [start.seqs(0), start.seqs(1)] == [[0], [1]]
    start.fail(0)
    publisher.offer(envelope(2, account_id=1))
    publisher.offer(envelope(3, account_id=2))
    await settle()
    assert slept == [0.25] and calls.open_calls() == [0] and calls.seqs(0) == [0]
    assert len(start.calls) == 2  # account 1's envelope 2 waits; 3 waits behind it (FIFO)
    await start.ok(1)
    calls.ok(0)
    await settle()
    for n in range(2, len(start.calls)):
        await start.ok(n)
    await publisher.flush()
    assert by_key(await on_bus(bus)) == {1: [0, 2], 2: [1, 3]}
    assert publisher.failures == 1 and publisher.published == 4
    await publisher.close()
    await task


async def test_a_cancelled_run_gives_started_calls_back_and_ignores_their_late_report(
    bus: EmbeddedBus,
) -> None:
    """A started call cannot be taken back; when ``run`` is cancelled its envelopes go back to
    the head of the FIFO all the same (sent again by ``close``: at least once), and its report,
    arriving later, changes nothing."""
    calls, start = PerCall(bus), Starter(bus)
    publisher = BatchPublisher(calls, start=start)
    task = asyncio.create_task(publisher.run())
    await settle()
    publisher.offer(envelope(0))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert publisher.pending == 1
    start.calls[0][1](None)  # the late report of the given-back call
    assert publisher.published == 0 and publisher.pending == 1
    closing = asyncio.create_task(publisher.close())
    while not closing.done():
        await settle()
        for n in calls.open_calls():
            calls.ok(n)
    assert calls.seqs(0) == [0] and publisher.published == 1


async def test_a_start_that_raises_is_a_failed_call_retried_through_publish_many(
    bus: EmbeddedBus, caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``start`` that raises (a bug, an envelope that cannot be encoded) does not escape into
    the socket's ``offer``, and the batch is not stuck: it counts as a failed call, logged,
    and goes again through ``publish_many`` after ``retry_initial_s``."""
    def broken(envelopes: Sequence[Envelope],
               on_done: Callable[[BaseException | None], None]) -> bool:
        raise ValueError("cannot encode")

    gated = Gated(bus)
    publisher = BatchPublisher(gated, start=broken, retry_initial_s=0.001)
    task = asyncio.create_task(publisher.run())
    await settle()
    with caplog.at_level(logging.WARNING, logger="tradewire.streams.publisher"):
        assert publisher.offer(envelope(0)) is True
        await publisher.flush()
    assert publisher.failures == 1 and gated.calls == [1]
    [record] = [r for r in caplog.records if "publishing a batch failed" in r.getMessage()]
    assert "cannot encode" in record.__dict__["fields"]["error"]
    assert await consumed(bus) == [0]
    await publisher.close()
    await task
