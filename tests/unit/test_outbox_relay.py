"""The outbox relay in-process: the fake producer, a real store in tmp_path. Events go out
oldest first, each job's in seq order, after the store's sync and before being marked;
a failure loses none and lets none overtake another of its job. At the default settings
unless a test says why not."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

import daemon.outbox as outbox
from daemon.errors import StoreFull
from daemon.metrics import Metrics
from daemon.outbox import ORDERED_ABOVE_BYTES, OutboxRelay
from daemon.settings import load_settings
from daemon.store import Store
from tests.support.fakes import FakeProducer, Sent
from tests.support.store_records import job_with_four_events, resize_event

TOPIC = "codegen.events"
MAX_PUBLISH_BYTES = load_settings().kafka.max_publish_bytes  # 16 MiB


def relay(store: Store, producer: FakeProducer, **options) -> OutboxRelay:
    return OutboxRelay(store, producer, TOPIC, MAX_PUBLISH_BYTES, metrics=Metrics(), **options)


def order(producer: FakeProducer) -> list[tuple[str, int]]:
    return [(e.job_id, e.seq) for e in producer.events()]


def rows(store: Store) -> list[tuple[str, int]]:
    return store.db.conn.execute("SELECT job_id, seq FROM outbox ORDER BY id").fetchall()


async def test_events_go_out_oldest_first_keyed_by_job_once_on_disk(store):
    job_with_four_events(store, "a")
    job_with_four_events(store, "b")
    producer, ran = FakeProducer(), []
    last_row = store.db.conn.execute("SELECT max(id) FROM outbox").fetchone()[0]

    async def on_disk_before_each_send(sent: Sent) -> None:
        ran.append(("send", store.synced_outbox_id >= last_row))

    async def before_publish() -> None:
        ran.append(("files written", None))

    producer.before_send = on_disk_before_each_send
    publisher = relay(store, producer, before_publish=before_publish)
    assert await publisher.publish_batch() == 8
    assert order(producer) == rows(store)
    assert ran == [("files written", None)] + [("send", True)] * 8
    assert [(s.topic, s.key) for s in producer.sent] == [
        (TOPIC, job.encode()) for job, _ in rows(store)
    ]
    assert [dict(s.headers)["type"] for s in producer.sent[:4]] == [
        b"job.accepted",
        b"phase.started",
        b"phase.completed",
        b"phase.started",
    ]
    assert store.outbox_backlog() == 0 and await publisher.publish_batch() == 0
    assert publisher._metrics.events_published._value.get() == 8


async def test_a_send_that_times_out_loses_nothing_and_is_overtaken_by_nothing(store):
    job_with_four_events(store, "a")
    producer = FakeProducer(send_errors=[None, None, KafkaTimeoutError()])
    publisher = relay(store, producer)
    with pytest.raises(KafkaTimeoutError):
        await publisher.publish_batch()
    assert order(producer) == [("a", 1), ("a", 2)] and store.outbox_backlog() == 2
    assert await publisher.publish_batch() == 2
    assert order(producer) == [("a", seq) for seq in (1, 2, 3, 4)]


async def test_an_event_the_producer_refuses_as_too_large_goes_out_without_contents(store):
    job_with_four_events(store, "a")
    resize_event(store, "a", 3, 2 * 1024**2)
    producer = FakeProducer(max_request_bytes=1024**2)  # aiokafka's default max_request_size
    await relay(store, producer).publish_batch()
    assert order(producer) == [("a", seq) for seq in (1, 2, 3, 4)]
    event = producer.events()[2]
    assert event.files[0].content == "" and "refused by the producer" in event.warnings[-1]
    (stored,) = store.db.conn.execute("SELECT payload FROM outbox WHERE seq = 3").fetchone()
    assert stored == producer.sent[2].value  # a publish again sends the same bytes


async def test_an_event_over_max_publish_bytes_is_made_smaller_before_it_is_sent(store):
    job_with_four_events(store, "a")
    resize_event(store, "a", 3, MAX_PUBLISH_BYTES + 1)
    producer = FakeProducer()
    await relay(store, producer).publish_batch()
    assert max(len(s.value) for s in producer.handed) < 10_000  # never handed as it was
    assert "kafka.max_publish_bytes" in producer.events()[2].warnings[-1]


async def test_a_large_event_goes_out_alone_for_its_job(store):
    job_with_four_events(store, "a")
    job_with_four_events(store, "b")
    resize_event(store, "a", 3, ORDERED_ABOVE_BYTES + 1)  # larger than any acknowledged yet
    producer = FakeProducer()
    publisher = relay(store, producer)
    await publisher.publish_batch()
    # a's next event waits for the large one's acknowledgement; b goes on
    assert ("a", 4) not in order(producer) and ("b", 4) in order(producer)
    await publisher.publish_batch()
    assert [seq for job, seq in order(producer) if job == "a"] == [1, 2, 3, 4]


async def test_an_event_refused_at_its_smallest_holds_only_its_job(store, monkeypatch):
    # a refused event is tried again after 5 s (REFUSED_RETRY_S): too long for a unit test
    monkeypatch.setattr(outbox, "REFUSED_RETRY_S", 0.05)
    job_with_four_events(store, "a", error="e" * 5000)  # its phase.failed stays large
    job_with_four_events(store, "b")
    sizes = {
        (job, seq): len(payload)
        for job, seq, payload in store.db.conn.execute("SELECT job_id, seq, payload FROM outbox")
    }
    limit = max(size for key, size in sizes.items() if key != ("a", 3)) + 100
    producer = FakeProducer(broker_max_bytes=limit)
    publisher = relay(store, producer)
    for _ in range(3):
        await publisher.publish_batch()
    # a's later events are not marked published (a broker this strict took a4, sent
    # beside a3: it goes out again after a3), b's are
    unpublished = store.db.conn.execute("SELECT job_id, seq FROM outbox WHERE published_at IS NULL")
    assert sorted(unpublished) == [("a", 3), ("a", 4)]
    assert len(producer.refused) == 2  # as it was, then smallest; not again until the retry
    assert [seq for job, seq in order(producer) if job == "b"] == [1, 2, 3, 4]
    reason = publisher._metrics.readiness.reason() or ""
    assert "refused as too large even at their smallest" in reason and "of a wait" in reason
    producer.broker_max_bytes = None  # the topic's max.message.bytes raised
    await asyncio.sleep(0.06)
    await publisher.publish_batch()
    await publisher.publish_batch()
    assert order(producer)[-2:] == [("a", 3), ("a", 4)]
    assert len(producer.events()[-2].error or "") == 1000  # cut to its type's fields
    assert publisher._metrics.readiness.reason() is None and store.outbox_backlog() == 0


async def test_a_full_store_when_marking_sends_again_and_loses_nothing(store):
    job_with_four_events(store, "a")
    mark_published = store.mark_published
    full = [StoreFull("store: database or disk is full")]

    def mark_unless_full(ids):
        if full:
            raise full.pop()
        mark_published(ids)

    store.mark_published = mark_unless_full
    producer = FakeProducer()
    publisher = relay(store, producer)
    task = asyncio.create_task(publisher.run())
    async with asyncio.timeout(5):
        while store.outbox_backlog():
            await asyncio.sleep(0.01)
    publisher.stop()
    await task
    # sent twice, the same events (subscribers de-duplicate on event_id), in order each time
    assert order(producer) == [("a", seq) for seq in (1, 2, 3, 4)] * 2
    assert len({e.event_id for e in producer.events()}) == 4


async def test_flush_gives_up_quietly_and_keeps_the_rows(store):
    job_with_four_events(store, "a")
    producer = FakeProducer(down=KafkaConnectionError("no broker"))
    await relay(store, producer).flush(timeout_s=0.1)
    assert store.outbox_backlog() == 4 and producer.sent == []
