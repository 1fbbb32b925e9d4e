"""Hostile requests through Kafka into a running daemon: each reaches the dead-letter topic
unchanged with our ``error`` and ``source`` headers, its offset is committed, the daemon
stays up and serves the next good request."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.hostile_requests import ANY_MESSAGE, NAMED, good_request

FORGED_HEADERS = [("error", b"none"), ("source", b"x:0:0"), ("truncated", b"0"), ("t", b"1")]


def test_the_named_inputs_are_what_this_tier_sends():
    assert len(NAMED) >= 15  # a rename must not silently empty the hostile test below


async def test_hostile_messages_are_dead_letters_and_the_daemon_serves_on(hostile):
    values = [*NAMED.values(), None]
    metas = await hostile.send(*values[:-1])
    metas += await hostile.send(None, key=b"tombstone")  # a record without a value
    forged = await hostile.send(b"not json", headers=FORGED_HEADERS)
    good = await hostile.send(good_request(request_id="after-hostile"))
    dead = await hostile.dead_letters(metas + forged)
    for value, meta, record in zip(values + [b"not json"], metas + forged, dead, strict=True):
        assert record.value == value  # unchanged
        assert hostile.header(record, "source") == hostile.source_of(meta).encode()
        error = hostile.header(record, "error").decode()
        assert error and error.isprintable() and len(error) <= 1000
    names = [name for name, _ in dead[-1].headers]
    assert names == ["original-error", "original-source", "original-truncated", "t"] + [
        "error",
        "source",
    ]
    await hostile.wait_committed(metas + forged + good)
    assert hostile.jobs_by_source() == {hostile.source_of(good[0]): "after-hostile"}
    assert (await hostile.get("/healthz"))[0] == 200 and hostile.alive()
    events = await hostile.completed("after-hostile")
    assert events[-1].type == "job.completed" and events[-1].status == "completed"


async def test_a_request_id_of_the_derived_form_cannot_take_a_later_job(hostile):
    topic = hostile.settings.kafka.requests_topic
    [forged] = await hostile.send(
        good_request(request_id=f"{topic}:0:1", project_name="thief"), partition=0
    )
    [honest] = await hostile.send(good_request(project_name="honest"), partition=0)
    assert (forged.offset, honest.offset) == (0, 1)  # the id the forged request named
    [dead] = await hostile.dead_letters([forged])
    assert b"topic:partition:offset" in hostile.header(dead, "error")
    events = await hostile.completed(f"{topic}:0:1")
    assert events[0].type == "job.accepted" and events[0].project_name == "honest"
    assert events[-1].status == "completed"
    assert "job.rejected" not in [e.type for e in events]
    await hostile.wait_committed([forged, honest])


async def test_a_forged_rejection_does_not_touch_a_running_job(hostile):
    [accepted] = await hostile.send(good_request(request_id="victim"))
    async with asyncio.timeout(30):  # the job exists before the forgery arrives
        while "victim" not in hostile.jobs_by_source().values():
            await asyncio.sleep(0.05)
    forgery = json.dumps({"request_id": "victim", "project_name": "Not A Slug"}).encode()
    [forged] = await hostile.send(forgery)
    [dead] = await hostile.dead_letters([forged])
    assert dead.value == forgery and b"project_name" in hostile.header(dead, "error")
    events = await hostile.completed("victim")
    assert [e.type for e in events if e.type in ("job.rejected", "job.completed")] == [
        "job.completed"
    ]
    assert events[-1].status == "completed"
    await hostile.wait_committed([accepted, forged])


async def test_a_request_cannot_choose_its_spending(hostile):
    unpriced = good_request(request_id="any-model", options={"model": "claude-free-forever"})
    greedy = good_request(request_id="greedy", options={"max_tokens": {"DB": 128_000}})
    metas = await hostile.send(unpriced, greedy)
    [dead] = await hostile.dead_letters(metas[:1])
    error = hostile.header(dead, "error").decode()
    assert "'claude-free-forever' is not allowed" in error
    assert "claude-sonnet-5-5" in error  # the allowed models are named
    events = await hostile.completed("greedy")
    assert events[-1].status == "completed"
    ceiling = hostile.settings.llm.max_tokens_ceiling
    assert ceiling == 16_000  # the default
    assert [call.body["max_tokens"] for call in hostile.server.calls_for("DB")] == [ceiling]
    assert "any-model" not in hostile.jobs_by_source().values()
    await hostile.wait_committed(metas)


async def test_a_full_disk_pauses_intake_until_there_is_room(hostile):
    """SQLite's ``PRAGMA max_page_count`` on the daemon's own store connection makes it
    answer SQLITE_FULL as soon as the file would grow, exactly as a full disk does: the test
    fills the 'disk' without a tiny filesystem, and frees it again by raising the cap."""
    conn = hostile.daemon.store.db.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    # a 100 KB mockup needs new pages whatever room the store's pages have
    big = good_request(
        request_id="after-the-disk", mockup={"kind": "text", "description": "x" * 100_000}
    )
    metas = await hostile.send(big)
    async with asyncio.timeout(30):
        while (await hostile.get("/readyz"))[0] == 200:
            await asyncio.sleep(0.1)
    status, reason = await hostile.get("/readyz")
    assert status == 503 and "disk full" in reason
    assert (await hostile.get("/healthz"))[0] == 200 and hostile.alive()
    tp = hostile.daemon.consumer.assignment()
    assert hostile.daemon.consumer.paused() == tp  # every partition, still in the group
    assert hostile.jobs_by_source() == {}
    committed = await hostile.daemon.consumer.committed(
        *[t for t in tp if t.partition == metas[0].partition]
    )
    assert (committed or 0) <= metas[0].offset  # the request is not given up
    await asyncio.sleep(2.5)  # a few retries, all refused
    assert (await hostile.get("/readyz"))[0] == 503
    conn.execute("PRAGMA max_page_count = 1073741823")
    events = await hostile.completed("after-the-disk")
    assert events[-1].status == "completed"
    assert (await hostile.get("/readyz"))[0] == 200
    await hostile.wait_committed(metas)


def _hypothesis_messages(count: int) -> list[bytes]:
    """``count`` messages drawn by hypothesis (any bytes, any JSON, near-valid requests)."""
    drawn: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(ANY_MESSAGE | st.just(good_request()))
    def draw(message: bytes) -> None:
        drawn.append(message)

    draw()
    return drawn


async def test_any_message_is_exactly_one_job_or_one_dead_letter(hostile):
    messages = _hypothesis_messages(50)
    metas = await hostile.send(*messages)
    good = await hostile.send(good_request(request_id="after-the-property"))
    await hostile.wait_committed(metas + good)
    jobs = hostile.jobs_by_source()
    dead = await hostile.all_dead_letters()  # fails if any message has two
    for message, meta in zip(messages, metas, strict=True):
        source = hostile.source_of(meta)
        assert not (source in jobs and source in dead)
        assert source in jobs or source in dead or _repeats_a_job(message, jobs)
        if source in dead:
            assert dead[source].value == message
    assert (await hostile.get("/healthz"))[0] == 200 and hostile.alive()
    assert (await hostile.completed("after-the-property"))[-1].status == "completed"


def _repeats_a_job(message: bytes, jobs: dict[str, str]) -> bool:
    """A valid request whose request_id an earlier message took: no job, no dead letter."""
    try:
        request_id = json.loads(message).get("request_id")
    except (ValueError, AttributeError, RecursionError):
        return False
    return request_id in jobs.values()


async def test_a_disk_that_fills_while_a_job_runs_loses_nothing(hostile):
    """The same full disk (``PRAGMA max_page_count``, see above), this time in the middle of
    a job: its phase, the relay and the scheduler wait with /readyz saying why, the daemon
    stays up, and once there is room the job completes with no phase failed."""
    hostile.server.latency_s = 0.2  # a phase takes long enough for the disk to fill in it
    await hostile.send(good_request(request_id="mid-run"))
    store = hostile.daemon.store
    async with asyncio.timeout(30):  # ARCH done: the job is in its file phases
        while not (store.jobs() and store.phase_statuses("mid-run").get("ARCH") == "completed"):
            await asyncio.sleep(0.05)
    conn = store.db.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    async with asyncio.timeout(30):
        while (await hostile.get("/readyz"))[0] == 200:
            await asyncio.sleep(0.1)
    assert "disk full" in (await hostile.get("/readyz"))[1]
    await asyncio.sleep(3)  # retries, all refused; nothing gives up, nothing exits
    assert hostile.alive() and (await hostile.get("/healthz"))[0] == 200
    stuck = list(store.phase_statuses("mid-run").values()).count("completed")
    assert stuck < 11
    conn.execute("PRAGMA max_page_count = 1073741823")
    events = await hostile.completed("mid-run")
    assert events[-1].status == "completed"
    assert not [e for e in events if e.type == "phase.failed"]
    async with asyncio.timeout(15):
        while (await hostile.get("/readyz"))[0] != 200:
            await asyncio.sleep(0.1)
