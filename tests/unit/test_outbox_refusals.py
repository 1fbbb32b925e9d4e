"""The relay's handling of a broker that refuses events as too large, with a stand-in for
the producer that acknowledges in send order per partition, as Kafka does, and fails a
message over its limit as a broker would (MessageSizeTooLargeError on the future)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError

from daemon.contract import Event, parse_event
from daemon.metrics import Metrics
from daemon.outbox import OutboxRelay
from daemon.store import Store
from tests.support.store_records import job_with_four_events, resize_event

LIMIT_BYTES = 600 * 1024


class RefusingBroker:
    """``send`` queues a message; each is then acknowledged or refused, in order."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.topic: list[Event] = []  # what the broker accepted, in order
        self.refused: list[tuple[str, int]] = []

    async def send(self, topic, value, key, headers):
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(self._settle, future, value)
        return future

    def _settle(self, future: asyncio.Future[object], value: bytes) -> None:
        event = parse_event(value)
        if len(value) > self.limit_bytes:
            self.refused.append((event.job_id, event.seq))
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.topic.append(event)
            future.set_result(None)


async def _drain(relay: OutboxRelay, store: Store) -> int:
    batches = 0
    while store.outbox_backlog() and batches < 10:
        batches += 1
        await relay.publish_batch()
    return batches


async def test_a_refused_event_goes_out_smaller_and_is_never_overtaken(tmp_path):
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "big-1")
    resize_event(store, "big-1", 3, 2 * LIMIT_BYTES)
    job_with_four_events(store, "small-1")
    broker = RefusingBroker(LIMIT_BYTES)
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())  # type: ignore[arg-type]
    await _drain(relay, store)
    assert store.outbox_backlog() == 0
    assert broker.refused == [("big-1", 3)]
    order = [(e.job_id, e.seq) for e in broker.topic]
    assert [seq for job, seq in order if job == "big-1"] == [1, 2, 3, 4]
    assert [seq for job, seq in order if job == "small-1"] == [1, 2, 3, 4]
    # the other job was not held behind the refused event: all of it went out first
    assert order.index(("small-1", 4)) < order.index(("big-1", 3))
    shrunk = next(e for e in broker.topic if (e.job_id, e.seq) == ("big-1", 3))
    assert shrunk.files[0].content == "" and "refused by the broker" in shrunk.warnings[-1]
    stored = store.db.conn.execute(
        "SELECT payload FROM outbox WHERE job_id = 'big-1' AND seq = 3"
    ).fetchone()[0]
    assert stored == shrunk.to_json()
    store.close()


async def test_refused_without_contents_it_is_cut_to_its_own_fields(tmp_path):
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "warn-1")
    row_id, payload = store.db.conn.execute(
        "SELECT id, payload FROM outbox WHERE job_id = 'warn-1' AND seq = 3"
    ).fetchone()
    event = parse_event(payload)
    noisy = event.model_copy(update={"warnings": ["w" * 1000] * 1000})  # 1 MB of warnings
    store.replace_payload(row_id, noisy.to_json())
    broker = RefusingBroker(LIMIT_BYTES)
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())  # type: ignore[arg-type]
    await _drain(relay, store)
    assert store.outbox_backlog() == 0
    # its one file's content is a byte: leaving it out would not help, so it is cut at once
    assert broker.refused == [("warn-1", 3)]
    cut = next(e for e in broker.topic if e.seq == 3)
    assert cut.type == "phase.completed" and cut.files == [] and len(cut.warnings) == 1
    assert "cut to the fields of its type" in cut.warnings[0]
    assert [e.seq for e in broker.topic] == [1, 2, 3, 4]
    store.close()


class DownBroker(RefusingBroker):
    """Fails every send as a broker that cannot be reached, until ``up`` is set."""

    up = False

    async def send(self, topic, value, key, headers):
        if not self.up:
            raise KafkaConnectionError("no broker")
        return await super().send(topic, value, key, headers)


async def test_readyz_says_when_events_cannot_be_published(tmp_path, monkeypatch):
    import daemon.outbox as outbox

    # 30 s of failures before /readyz turns: too long to wait for in a unit test.
    monkeypatch.setattr(outbox, "UNREADY_AFTER_S", 0.3)
    monkeypatch.setattr(outbox, "RETRY_BACKOFF_MAX_S", 0.1)
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "j-1")
    broker, metrics = DownBroker(LIMIT_BYTES), Metrics()
    relay = OutboxRelay(store, broker, "events", metrics=metrics)  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(10):
            while metrics.readiness.reason() is None:
                await asyncio.sleep(0.05)
        assert metrics.readiness.reason().startswith("events: not published for")
        broker.up = True
        async with asyncio.timeout(10):
            while metrics.readiness.reason() is not None or store.outbox_backlog():
                await asyncio.sleep(0.05)
    finally:
        relay.stop()
        await task
    assert [e.seq for e in broker.topic] == [1, 2, 3, 4]
    store.close()


class FlakyBroker(RefusingBroker):
    """Fails the delivery of the first message (a request timing out), then acknowledges."""

    failed = False

    def _settle(self, future: asyncio.Future[object], value: bytes) -> None:
        if not self.failed:
            self.failed = True
            future.set_exception(RequestTimedOutError())
            return
        super()._settle(future, value)


async def test_a_failed_delivery_is_not_overtaken_by_its_jobs_later_events(tmp_path):
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "j-1")
    broker = FlakyBroker(LIMIT_BYTES)
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())  # type: ignore[arg-type]
    for _ in range(3):
        with contextlib.suppress(RequestTimedOutError):
            await relay.publish_batch()
    assert store.outbox_backlog() == 0
    seqs = [e.seq for e in broker.topic]
    assert seqs[seqs.index(1) :] == [1, 2, 3, 4]  # whatever went out before, 1 leads again
    store.close()
