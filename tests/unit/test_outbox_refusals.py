"""The relay's handling of a broker that refuses events as too large, with the fake producer:
it acknowledges in send order per partition, as Kafka does, and fails a message over the
broker's limit as a broker would (MessageSizeTooLargeError on the future)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

from daemon.contract import parse_event
from daemon.metrics import Metrics
from daemon.outbox import OutboxRelay
from daemon.store import Store
from tests.support.fakes import FakeProducer
from tests.support.store_records import job_with_four_events, resize_event

LIMIT_BYTES = 600 * 1024


def refused(producer: FakeProducer) -> list[tuple[str, int]]:
    return [(e.job_id, e.seq) for e in map(parse_event, (r.value for r in producer.refused))]


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
    broker = FakeProducer(broker_max_bytes=LIMIT_BYTES)
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())
    await _drain(relay, store)
    assert store.outbox_backlog() == 0
    assert refused(broker) == [("big-1", 3)]
    order = [(e.job_id, e.seq) for e in broker.events()]
    assert [seq for job, seq in order if job == "big-1"] == [1, 2, 3, 4]
    assert [seq for job, seq in order if job == "small-1"] == [1, 2, 3, 4]
    # the other job was not held behind the refused event: all of it went out first
    assert order.index(("small-1", 4)) < order.index(("big-1", 3))
    shrunk = next(e for e in broker.events() if (e.job_id, e.seq) == ("big-1", 3))
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
    broker = FakeProducer(broker_max_bytes=LIMIT_BYTES)
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())
    await _drain(relay, store)
    assert store.outbox_backlog() == 0
    # its one file's content is a byte: leaving it out would not help, so it is cut at once
    assert refused(broker) == [("warn-1", 3)]
    cut = next(e for e in broker.events() if e.seq == 3)
    assert cut.type == "phase.completed" and cut.files == [] and len(cut.warnings) == 1
    assert "cut to the fields of its type" in cut.warnings[0]
    assert [e.seq for e in broker.events()] == [1, 2, 3, 4]
    store.close()


async def test_readyz_says_when_events_cannot_be_published(tmp_path, monkeypatch):
    import daemon.outbox as outbox

    # 30 s of failures before /readyz turns: too long to wait for in a unit test.
    monkeypatch.setattr(outbox, "UNREADY_AFTER_S", 0.3)
    monkeypatch.setattr(outbox, "RETRY_BACKOFF_MAX_S", 0.1)
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "j-1")
    broker = FakeProducer(down=KafkaConnectionError("no broker"))
    metrics = Metrics()
    relay = OutboxRelay(store, broker, "events", metrics=metrics)
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(10):
            while metrics.readiness.reason() is None:
                await asyncio.sleep(0.05)
        assert metrics.readiness.reason().startswith("events: not published for")
        broker.down = None
        async with asyncio.timeout(10):
            while metrics.readiness.reason() is not None or store.outbox_backlog():
                await asyncio.sleep(0.05)
    finally:
        relay.stop()
        await task
    assert [e.seq for e in broker.events()] == [1, 2, 3, 4]
    store.close()


async def test_a_failed_delivery_is_not_overtaken_by_its_jobs_later_events(tmp_path):
    store = Store(tmp_path / "s.db")
    job_with_four_events(store, "j-1")
    broker = FakeProducer(ack_errors=[RequestTimedOutError()])
    relay = OutboxRelay(store, broker, "events", metrics=Metrics())
    for _ in range(3):
        with contextlib.suppress(RequestTimedOutError):
            await relay.publish_batch()
    assert store.outbox_backlog() == 0
    seqs = [e.seq for e in broker.events()]
    assert seqs[seqs.index(1) :] == [1, 2, 3, 4]  # whatever went out before, 1 leads again
    store.close()
