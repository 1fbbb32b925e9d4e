"""The changelog writer in the relay, on the fake producer and a real store in tmp_path:
the records of the marked keys go to the job's request partition, keyed as the design
says (docs/cluster-design.md section 1.2), and are acknowledged before any event committed
with them is sent; a mark is deleted only once its record is acknowledged; a failure holds
the events and loses nothing. With cluster mode off, the relay sends no record and never
reads the marks."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from daemon import changelog
from daemon.changelog_writer import ChangelogWriter
from daemon.contract import parse_event
from daemon.metrics import Metrics
from daemon.outbox import OutboxRelay
from daemon.store import Store
from tests.support.fakes import FakeProducer, Sent
from tests.support.store_records import job_with_four_events

EVENTS = "codegen.events"
CHANGELOG = "codegen.changelog"
SOURCE = "codegen.requests:3:17"  # request partition 3
KEYS = {
    "a",
    "a/request",
    "a/phase/ARCH",
    "a/phase/DB",
    "a/file/a.txt",
    *(f"a/event/{seq}" for seq in (1, 2, 3, 4)),
}


@pytest.fixture
def cluster_store(tmp_path):
    opened = Store(tmp_path / "c.db", changelog=True)
    yield opened
    opened.close()


def relay(store: Store, producer: FakeProducer) -> OutboxRelay:
    writer = ChangelogWriter(store, producer, CHANGELOG)
    return OutboxRelay(store, producer, EVENTS, metrics=Metrics(), changelog=writer)


def records(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.topic == CHANGELOG]


def keys(sent: list[Sent]) -> set[str]:
    return {(s.key or b"").decode() for s in records(sent)}


async def test_no_event_goes_out_before_the_records_of_its_transaction_are_acknowledged(
    cluster_store,
):
    job_with_four_events(cluster_store, "a", source=SOURCE)
    producer, checked = FakeProducer(), []

    async def check(sent: Sent) -> None:
        if sent.topic == EVENTS:
            seq = parse_event(sent.value or b"").seq
            acked = keys(producer.sent)
            assert {"a", "a/request", f"a/event/{seq}"} <= acked
            assert len(records(producer.handed)) == len(records(producer.sent))  # none pending
            checked.append(seq)

    producer.before_send = check
    publisher = relay(cluster_store, producer)
    assert await publisher.publish_batch() == 4 + len(KEYS)
    assert checked == [1, 2, 3, 4]
    assert [s.topic for s in producer.sent] == [CHANGELOG] * len(KEYS) + [EVENTS] * 4


async def test_records_go_to_the_jobs_partition_with_the_designs_keys_and_fence(cluster_store):
    job_with_four_events(cluster_store, "a", source=SOURCE)
    expected = {key: changelog.build(cluster_store, key) for key in KEYS}
    assert {mark.key for mark in cluster_store.marks()} == KEYS
    producer = FakeProducer()
    await relay(cluster_store, producer).publish_batch()
    sent = records(producer.sent)
    assert {(s.key or b"").decode(): s.value for s in sent} == expected
    assert all(value is not None for value in expected.values())
    assert {s.partition for s in sent} == {3}
    assert all(s.headers == [("fence", b"0")] for s in sent)  # placeholder until ownership
    events = [s for s in producer.sent if s.topic == EVENTS]
    assert {s.partition for s in events} == {None}  # events keep the partitioner's placement


async def test_published_events_become_tombstones_at_the_next_pass(cluster_store):
    job_with_four_events(cluster_store, "a", source=SOURCE)
    producer = FakeProducer()
    publisher = relay(cluster_store, producer)
    await publisher.publish_batch()
    # marked by mark_published, and the job's state with them
    assert {mark.key for mark in cluster_store.marks()} == {f"a/event/{s}" for s in (1, 2, 3, 4)}
    before = len(producer.sent)
    assert await publisher.publish_batch() == 4
    tombstones = producer.sent[before:]
    assert {(s.key or b"").decode() for s in tombstones} == {f"a/event/{s}" for s in (1, 2, 3, 4)}
    assert all(s.value is None and s.partition == 3 for s in tombstones)
    assert cluster_store.marks() == [] and await publisher.publish_batch() == 0


async def test_a_mark_is_deleted_only_once_acknowledged_and_a_newer_mark_stays(cluster_store):
    job_with_four_events(cluster_store, "a", source=SOURCE)
    order = [mark.key for mark in cluster_store.marks()]
    failed = order.index("a/request")
    producer = FakeProducer(ack_errors=[None] * failed + [KafkaTimeoutError()])

    async def mark_again(sent: Sent) -> None:
        if sent.key == b"a/file/a.txt":
            with cluster_store.transaction():
                cluster_store._mark("a", "file/a.txt")  # staged again while being sent

    producer.before_send = mark_again
    with pytest.raises(KafkaTimeoutError):
        await relay(cluster_store, producer).publish_batch()
    assert [s for s in producer.handed if s.topic == EVENTS] == []  # the events wait
    assert {mark.key for mark in cluster_store.marks()} == {"a/request", "a/file/a.txt"}
    assert cluster_store.marks()[-1].key == "a/file/a.txt"  # marked after the pass began


async def test_a_failed_changelog_send_is_retried_and_loses_nothing(cluster_store):
    job_with_four_events(cluster_store, "a", source=SOURCE)
    producer = FakeProducer(send_errors=[None, None, KafkaConnectionError("broker gone")])
    publisher = relay(cluster_store, producer)
    with pytest.raises(KafkaConnectionError):
        await publisher.publish_batch()
    assert len(producer.sent) == 2 and len(cluster_store.marks()) == len(KEYS) - 2
    task = asyncio.create_task(publisher.run())
    async with asyncio.timeout(5):
        while cluster_store.outbox_backlog() or cluster_store.marks():
            await asyncio.sleep(0.01)
    publisher.stop()
    await task
    assert [(e.job_id, e.seq) for e in producer.events(EVENTS)] == [("a", s) for s in (1, 2, 3, 4)]
    latest = {(s.key or b"").decode(): s.value for s in records(producer.sent)}
    assert set(latest) == KEYS
    assert latest == {key: changelog.build(cluster_store, key) for key in KEYS}


async def test_with_cluster_mode_off_no_record_is_sent_and_the_marks_are_never_read(
    store, monkeypatch
):
    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("the marks were read")

    monkeypatch.setattr(store, "marks", unread)
    monkeypatch.setattr(store, "last_mark_id", unread)
    monkeypatch.setattr(store, "delete_marks", unread)
    job_with_four_events(store, "a", source=SOURCE)
    producer = FakeProducer()
    publisher = OutboxRelay(store, producer, EVENTS, metrics=Metrics())
    assert await publisher.publish_batch() == 4
    assert await publisher.publish_batch() == 0
    assert {s.topic for s in producer.sent} == {EVENTS}
