"""Events too large to publish, against the real broker: made smaller (and stored so),
never dropped, never holding other jobs' events back, never overtaken by their own job's
later events. Topics the daemon creates allow the largest event it sends."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from daemon.contract import Event
from daemon.kafka import make_producer
from daemon.metrics import Metrics
from daemon.outbox import OutboxRelay
from daemon.store import Store
from daemon.topics import TOPIC_HEADROOM_BYTES, ensure_topics, topic_configs
from tests.support.daemons import running
from tests.support.store_records import job_with_four_events, resize_event
from tests.support.topics import raw_events


async def _publish_all(relay: OutboxRelay, store: Store, rounds: int = 10) -> None:
    for _ in range(rounds):
        if not await relay.publish_batch() and store.outbox_backlog() == 0:
            return


def _by_job(events: list[Event]) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = {}
    for event in events:
        found.setdefault(event.job_id, []).append(event)
    return found


async def test_an_event_the_producer_refuses_goes_out_smaller_in_order(make_settings, tmp_path):
    settings = make_settings()
    kafka = settings.kafka
    await ensure_topics(
        kafka.bootstrap_servers, [kafka.events_topic], 2, configs=topic_configs(kafka)
    )
    store = Store(settings.store.path)
    # Just under kafka.max_publish_bytes: the relay's own size check lets it through, and the
    # producer refuses it (its limit counts the record's key, headers and framing too).
    job_with_four_events(store, "big-1")
    resize_event(store, "big-1", 3, kafka.max_publish_bytes - 20)
    job_with_four_events(store, "small-1")
    producer = make_producer(kafka, kafka.bootstrap_servers)
    await producer.start()
    try:
        relay = OutboxRelay(store, producer, kafka.events_topic, kafka.max_publish_bytes)
        await asyncio.wait_for(_publish_all(relay, store), 60)
    finally:
        await producer.stop()
    assert store.outbox_backlog() == 0
    stored = store.db.conn.execute(
        "SELECT payload FROM outbox WHERE job_id = 'big-1' AND seq = 3"
    ).fetchone()[0]
    store.close()
    jobs = _by_job(await raw_events(settings, timeout_s=20))
    assert [e.seq for e in jobs["big-1"]] == [1, 2, 3, 4]  # in order, each once
    assert [e.seq for e in jobs["small-1"]] == [1, 2, 3, 4]
    shrunk = jobs["big-1"][2]
    assert shrunk.files[0].path == "a.txt" and shrunk.files[0].content == ""
    assert "file contents left out" in shrunk.warnings[-1]
    assert "codegend export big-1 DIR" in shrunk.warnings[-1]
    assert shrunk.to_json() == stored  # a re-publish sends exactly what the topic has


async def test_an_event_refused_at_its_smallest_holds_only_its_own_job(make_settings):
    # The smallest limit kafka.max_publish_bytes allows (1024): tansu accepts messages of any
    # size, so the producer's own limit is the refusal a test can provoke, and at this size a
    # phase.failed with a long error is refused even cut to the fields of its type.
    settings = make_settings(kafka={"max_publish_bytes": 1024})
    kafka = settings.kafka
    await ensure_topics(
        kafka.bootstrap_servers, [kafka.events_topic], 2, configs=topic_configs(kafka)
    )
    store = Store(settings.store.path)
    job_with_four_events(store, "stuck-1" + "x" * 120, error="e" * 5000)
    job_with_four_events(store, "fine-1")
    metrics = Metrics()
    producer = make_producer(kafka, kafka.bootstrap_servers)
    await producer.start()
    try:
        relay = OutboxRelay(store, producer, kafka.events_topic, kafka.max_publish_bytes, metrics)
        await asyncio.wait_for(_publish_all(relay, store, rounds=5), 60)
        reason = metrics.readiness.reason()
    finally:
        await producer.stop()
    stuck = "stuck-1" + "x" * 120
    unpublished = store.db.conn.execute(
        "SELECT job_id, seq FROM outbox WHERE published_at IS NULL ORDER BY id"
    ).fetchall()
    store.close()
    assert unpublished == [(stuck, 3), (stuck, 4)]  # the refused one, and the one behind it
    jobs = _by_job(await raw_events(settings, timeout_s=20))
    assert [e.seq for e in jobs["fine-1"]] == [1, 2, 3, 4]
    assert [e.seq for e in jobs[stuck]] == [1, 2]
    assert reason is not None and reason.startswith("events:") and stuck in reason


async def test_topics_the_daemon_creates_allow_its_largest_event(make_settings):
    settings = make_settings()
    kafka = settings.kafka
    async with running(settings):
        pass
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        topics = [kafka.requests_topic, kafka.events_topic, kafka.dead_letter_topic]
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    limits = {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["max.message.bytes"]
        for answer in answers
        for resource in answer.resources
    }
    assert int(limits[kafka.events_topic]) == kafka.max_publish_bytes + TOPIC_HEADROOM_BYTES
    assert int(limits[kafka.requests_topic]) > kafka.max_request_bytes
    assert int(limits[kafka.dead_letter_topic]) > kafka.dead_letter_max_bytes
