"""Intake in-process: the fakes of the consumer and the producer, a real store in tmp_path.

Every message, whatever its bytes, is exactly one job or exactly one dead letter; the disk
running full holds intake back without losing or skipping a message."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.holds import RETRY_FIRST_S, RETRY_MAX_S
from daemon.intake import Intake
from daemon.metrics import Metrics
from daemon.settings import KafkaSettings, load_settings
from daemon.store import Store
from tests.support.fakes import REQUESTS_TOPIC, FakeConsumer, FakeProducer, Record
from tests.support.hostile_requests import ANY_MESSAGE, NAMED, good_request

TP = TopicPartition(REQUESTS_TOPIC, 0)


SETTINGS = load_settings()  # the defaults


def make_intake(store, records=(), producer=None, **kafka: Any) -> Intake:
    settings = SETTINGS
    consumer = FakeConsumer(TP)
    consumer.logs[TP] = list(records)
    return Intake(
        consumer,
        producer or FakeProducer(),
        store,
        KafkaSettings(**kafka),
        settings.llm.max_image_bytes,
        lambda: None,
        metrics=Metrics(),
        allowed_models=settings.allowed_models(),
    )


def job_ids(store: Store) -> list[str]:
    return [row["job_id"] for row in store.jobs()]


def event_types(store: Store, job_id: str) -> list[str]:
    return [row.type for row in store.unpublished(10_000) if row.job_id == job_id]


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_a_hostile_message_is_one_dead_letter(store, name):
    intake = make_intake(store)
    record = Record(7, NAMED[name], key=b"k", headers=(("trace", b"1"),))
    await intake.handle(record)
    [sent] = intake._producer.sent
    assert sent.value == NAMED[name] and sent.key == b"k"
    headers = dict(sent.headers)
    assert headers["source"] == f"{REQUESTS_TOPIC}:0:7".encode() and headers["trace"] == b"1"
    error = headers["error"].decode()
    assert error and len(error) <= 1000
    assert all(ch.isprintable() for ch in error)  # one line, no escape sequences
    assert job_ids(store) == []


async def test_the_dead_letter_headers_of_ours_are_the_only_ones(store):
    forged = (("error", b"all good"), ("source", b"elsewhere:0:0"), ("truncated", b"1"))
    intake = make_intake(store)
    await intake.handle(Record(3, b"not json", headers=(*forged, ("x", b"y"))))
    headers = intake._producer.sent[0].headers
    names = [name for name, _ in headers]
    assert names.count("error") == names.count("source") == 1 and "truncated" not in names
    assert dict(headers)["source"] == f"{REQUESTS_TOPIC}:0:3".encode()
    assert dict(headers)["error"].startswith(b"not JSON")
    kept = {name: value for name, value in headers if name.startswith("original-") or name == "x"}
    assert kept == {
        "original-error": b"all good",
        "original-source": b"elsewhere:0:0",
        "original-truncated": b"1",
        "x": b"y",
    }


async def test_a_record_the_broker_refuses_is_cut_without_its_own_headers(store):
    producer = FakeProducer(broker_max_bytes=3500)
    intake = make_intake(store, producer=producer, dead_letter_max_bytes=4096)
    value = b"\x00" * 3000
    await intake.handle(Record(1, value, key=b"k" * 5000, headers=(("big", b"h" * 5000),)))
    [sent] = producer.sent
    headers = dict(sent.headers)
    assert sent.value == value[:2048] and len(sent.key) == 1024
    assert set(headers) == {"error", "source", "truncated"} and headers["truncated"] == b"3000"


async def test_when_even_the_cut_record_is_refused_only_our_headers_go(store):
    producer = FakeProducer(max_request_bytes=1500)
    intake = make_intake(store, producer=producer, dead_letter_max_bytes=4096)
    await intake.handle(Record(1, b"\x00" * 4000))
    [sent] = producer.sent
    assert sent.value == b"" and dict(sent.headers)["truncated"] == b"4000"


async def test_a_tombstone_is_dead_lettered_as_a_tombstone(store):
    intake = make_intake(store)
    await intake.handle(Record(0, None))
    assert intake._producer.sent[0].value is None


async def test_a_request_id_of_the_derived_form_is_refused(store):
    intake = make_intake(store)
    await intake.handle(Record(0, good_request(request_id=f"{REQUESTS_TOPIC}:0:1")))
    await intake.handle(Record(1, good_request()))  # the offset the forged id named
    assert job_ids(store) == [f"{REQUESTS_TOPIC}:0:1"]
    error = dict(intake._producer.sent[0].headers)["error"]
    assert b"topic:partition:offset" in error
    # no job.rejected was put in the stream of the job it named
    assert event_types(store, f"{REQUESTS_TOPIC}:0:1") == ["job.accepted"]


@pytest.mark.parametrize("request_id", ["a:1:2", "codegen.requests:0:57", "x-y.z:00:9"])
def test_derived_form_request_ids(store, request_id):
    intake = make_intake(store)
    assert "topic:partition:offset" in intake.parse(good_request(request_id=request_id)).error


@pytest.mark.parametrize("request_id", ["shop-1", "order:42", "a:b:1", "a:1:b", "1:2"])
def test_other_request_ids_with_colons_are_fine(store, request_id):
    assert make_intake(store).parse(good_request(request_id=request_id)).request_id == request_id


async def test_a_rejection_naming_an_existing_job_leaves_its_stream_alone(store):
    intake = make_intake(store)
    await intake.handle(Record(0, good_request(request_id="victim")))
    await intake.handle(Record(1, json.dumps({"request_id": "victim"}).encode()))
    await intake.handle(Record(2, json.dumps({"request_id": "nobody"}).encode()))
    assert event_types(store, "victim") == ["job.accepted"]
    assert event_types(store, "nobody") == ["job.rejected"]
    assert len(intake._producer.sent) == 2  # both on the dead-letter topic


async def test_a_model_that_is_not_allowed_is_refused(store):
    intake = make_intake(store)
    await intake.handle(Record(0, good_request(request_id="m", options={"model": "gpt-x"})))
    await intake.handle(
        Record(1, good_request(request_id="h", options={"model": "claude-haiku-5-5"}))
    )
    assert job_ids(store) == ["h"]
    error = dict(intake._producer.sent[0].headers)["error"].decode()
    assert "'gpt-x' is not allowed" in error and "claude-haiku-5-5" in error


async def test_an_unexpected_error_still_makes_one_dead_letter(store, monkeypatch):
    def broken(*args):
        raise MemoryError

    intake = make_intake(store)
    monkeypatch.setattr("daemon.intake.GenerationRequest.model_validate", broken)
    await intake.handle(Record(0, good_request()))
    assert b"MemoryError" in dict(intake._producer.sent[0].headers)["error"]


_OFFSETS = itertools.count()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(ANY_MESSAGE, min_size=1, max_size=4))
def test_any_message_is_exactly_one_job_or_one_dead_letter(store, messages):
    asyncio.run(_exactly_one_outcome_each(store, messages))


async def _exactly_one_outcome_each(store: Store, messages: list[bytes]) -> None:
    records = [Record(next(_OFFSETS), value) for value in messages]
    known = set(job_ids(store))
    intake = make_intake(store, records)
    run = asyncio.create_task(intake.run())
    consumer = intake._consumer
    while not consumer.commits() or consumer.commits()[-1][TP] < records[-1].offset + 1:
        await asyncio.sleep(0.001)
        assert not run.done()  # the loop is still running
    intake.stop()
    await run
    dead = [dict(sent.headers)["source"].decode() for sent in intake._producer.sent]
    created = dict(store.db.conn.execute("SELECT source, job_id FROM jobs").fetchall())
    for record in records:
        source = f"{REQUESTS_TOPIC}:0:{record.offset}"
        if source in dead:
            assert dead.count(source) == 1 and source not in created
        else:  # a new job, or a repeat of the job its request_id names
            assert source in created or _request_id(record.value) in known | set(created.values())


async def test_a_full_disk_holds_intake_and_loses_nothing(store):
    """SQLite answers SQLITE_FULL when the database would grow past ``max_page_count``,
    exactly as when the disk itself is full; capping it at the current size fills the
    'disk' without a tiny filesystem."""
    records = [Record(0, good_request(request_id="a", mockup=_big_mockup())), Record(1, b"x")]
    records.append(Record(2, good_request(request_id="b", mockup=_big_mockup())))
    intake = make_intake(store, records)
    metrics, consumer = intake._metrics, intake._consumer
    _cap_pages(store)
    run = asyncio.create_task(intake.run())
    while metrics.readiness.reason() is None:
        await asyncio.sleep(0.01)
    assert "disk full" in metrics.readiness.reason()
    polls = consumer.polls
    await asyncio.sleep(0.3)
    assert consumer.polls > polls  # polling on while paused: the group keeps this member
    assert consumer.paused() == {TP} and job_ids(store) == []
    assert all(c[TP] <= 0 for c in consumer.commits())  # nothing committed past the held one
    _uncap_pages(store)
    while consumer.position[TP] < 3 or not consumer.commits() or consumer.commits()[-1][TP] < 3:
        await asyncio.sleep(0.05)
    intake.stop()
    await run
    assert metrics.readiness.reason() is None and consumer.paused() == set()
    assert sorted(job_ids(store)) == ["a", "b"] and len(intake._producer.sent) == 1


def test_the_disk_backoff_doubles_up_to_its_cap(store):
    from daemon.errors import StoreFull
    from daemon.holds import DiskHold

    hold = DiskHold(Metrics())
    waits = []
    for _ in range(8):
        hold.hold(StoreFull())
        waits.append(hold._backoff_s)
    assert waits[0] == RETRY_FIRST_S and waits[-1] == RETRY_MAX_S
    assert waits[:3] == [1.0, 2.0, 4.0] and hold.held()
    hold.writable()
    assert not hold.held() and hold._metrics.readiness.reason() is None


def _request_id(value: bytes | None) -> str | None:
    try:
        raw = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    found = raw.get("request_id") if isinstance(raw, dict) else None
    return found if isinstance(found, str) else None


def _big_mockup() -> dict[str, str]:
    # larger than any free space in the pages the store has: it needs new pages
    return {"kind": "text", "description": "x" * 100_000}


def _cap_pages(store: Store) -> None:
    conn = store.db.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap_pages(store: Store) -> None:
    store.db.conn.execute("PRAGMA max_page_count = 1073741823")
