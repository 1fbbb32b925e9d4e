"""The whole flow through the contract: requests in, phase events and files out."""

from __future__ import annotations

import base64
import json

from daemon.contract import GenerationRequest
from daemon.states import PHASE_NAMES
from daemon.store import Store
from tests.support.daemons import collect, running
from tests.support.messages_server import Reply
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce, raw_events


def by_type(events, kind):
    return [e for e in events if e.type == kind]


async def test_a_request_becomes_eleven_phases_and_files(make_settings, messages_server):
    settings = make_settings()
    async with running(settings):
        await produce(settings, request_bytes(request_id="job-1"))
        events = await collect(settings, "job-1")
        # every event out in the world was on disk (synced) before it was published
        store = Store(settings.store.path)
        published, synced = store.db.conn.execute(
            "SELECT max(id), (SELECT outbox_id FROM sync_points) FROM outbox "
            "WHERE published_at IS NOT NULL"
        ).fetchone()
        store.db.close()
        assert published and synced >= published
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "job.accepted" and events[0].phases == list(PHASE_NAMES)
    completed = by_type(events, "phase.completed")
    if settings.jobs.execution == "sequential":
        assert [e.phase for e in completed] == list(PHASE_NAMES)
    assert sorted(e.phase for e in completed) == sorted(PHASE_NAMES)
    assert events[-1].type == "job.completed" and events[-1].status == "completed"
    files = [f for e in completed for f in e.files]
    assert events[-1].files_total == len(files) == 30  # the server's 3 files for each of 10 phases
    assert all(f.content and len(f.sha256) == 64 for f in files)
    out = settings.output.dir / "job-1"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        f.path for f in files
    )
    assert events[-1].usage.calls == 11
    # every later phase was told about the plan and the files before it
    be_routes = messages_server.calls_for("BE_ROUTES")[0]
    text = json.dumps(be_routes.body)
    assert "Architecture plan" in text and "generated/be_models/file_1.txt" in text
    assert be_routes.body["output_config"]["format"]["type"] == "json_schema"
    assert be_routes.body["max_tokens"] == 5000


async def test_duplicate_request_id_makes_one_job(make_settings, messages_server):
    settings = make_settings()
    async with running(settings):
        await produce(settings, request_bytes(request_id="dup"), request_bytes(request_id="dup"))
        events = await collect(settings, "dup")
        await produce(settings, request_bytes(request_id="dup"))
        await produce(settings, request_bytes(request_id="after"))
        await collect(settings, "after")
    assert len(by_type(events, "job.accepted")) == 1
    store = Store(settings.store.path)
    try:
        assert [row["job_id"] for row in store.jobs()] == ["dup", "after"]
    finally:
        store.close()
    assert len(messages_server.calls_for("ARCH")) == 2


async def test_requests_without_id_are_keyed_by_their_offset(make_settings):
    settings = make_settings(kafka={"topic_partitions": 1})
    async with running(settings):
        await produce(settings, request_bytes())
        events = await collect(settings, f"{settings.kafka.requests_topic}:0:0")
    assert events[-1].status == "completed" and events[0].request_id is None


async def test_bad_messages_go_to_the_dead_letter_topic(make_settings, messages_server):
    from aiokafka import AIOKafkaConsumer

    settings = make_settings(kafka={"max_request_bytes": 4096, "topic_partitions": 1})
    bad = [
        b"this is not json",
        b"[1, 2, 3]",
        request_bytes(request_id="bad-name", project_name="Not A Slug"),
        json.dumps(
            {
                "request_id": "too-big",
                "project_name": "x",
                "mockup": {"kind": "text", "description": "x" * 5000},
            }
        ).encode(),
        request_bytes(
            request_id="bad-image",
            mockup={"kind": "image", "media_type": "image/png", "data": "%%%"},
        ),
    ]
    async with running(settings):
        await produce(settings, *bad, request_bytes(request_id="good"))
        events = await collect(settings, "good")
        assert events[-1].status == "completed"
        rejected = [e for e in await raw_events(settings) if e.type == "job.rejected"]
    assert sorted(e.job_id for e in rejected) == ["bad-image", "bad-name", "too-big"]
    assert "project_name" in next(e.error for e in rejected if e.job_id == "bad-name")
    consumer = AIOKafkaConsumer(
        settings.kafka.dead_letter_topic,
        auto_offset_reset="earliest",
        bootstrap_servers=settings.kafka.bootstrap_servers,
    )
    await consumer.start()
    try:
        records = []
        while len(records) < len(bad):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    assert [r.value for r in records] == bad
    for offset, record in enumerate(records):
        headers = dict(record.headers)
        assert headers["source"] == f"{settings.kafka.requests_topic}:0:{offset}".encode()
        assert headers["error"]


async def test_a_failing_phase_ends_partial_and_resume_reruns_only_it(
    make_settings, messages_server
):
    settings = make_settings()
    messages_server.enqueue("DB", Reply(status=400, error_type="invalid_request_error"))
    async with running(settings) as daemon:
        await produce(settings, request_bytes(request_id="part"))
        events = await collect(settings, "part")
        assert events[-1].status == "partial" and events[-1].failed_phases == ["DB"]
        failed = by_type(events, "phase.failed")
        assert [e.phase for e in failed] == ["DB"] and "HTTP 400" in failed[0].error
        assert "sk-ant-test-key" not in json.dumps([e.model_dump(mode="json") for e in events])
        assert (
            len(by_type(events, "phase.completed")) == 11
        )  # ARCH, the 9 other file phases, VERIFY
        calls_before = {p: len(messages_server.calls_for(p)) for p in PHASE_NAMES}

        assert daemon.store.reopen("part", reason="test") == "DB"
        daemon.scheduler.wake()
        again = await collect(settings, "part", completions=2)
    assert again[-1].status == "completed" and again[-1].failed_phases == []
    # read afresh, the job's history ends with its last outcome, not the first
    assert (await collect(settings, "part"))[-1].status == "completed"
    resumed = again[len(events) :]
    assert [e.type for e in resumed][:2] == ["job.resumed", "phase.started"]
    # VERIFY checks the project again, with the phase's new files
    assert [e.phase for e in by_type(resumed, "phase.completed")] == ["DB", "VERIFY"]
    calls_after = {p: len(messages_server.calls_for(p)) for p in PHASE_NAMES}
    assert {
        p: calls_after[p] - calls_before[p]
        for p in PHASE_NAMES
        if calls_after[p] != calls_before[p]
    } == {"DB": 1}


async def test_arch_failing_fails_the_job(make_settings, messages_server):
    settings = make_settings(llm={"max_repairs": 1})
    messages_server.enqueue("ARCH", Reply(text="not json"), Reply(text="still not"))
    async with running(settings):
        await produce(settings, request_bytes(request_id="doomed"))
        events = await collect(settings, "doomed")
    assert events[-1].status == "failed"
    assert [e.phase for e in by_type(events, "phase.failed")] == ["ARCH"]
    assert by_type(events, "phase.completed") == []


async def test_small_budgets_still_complete_every_phase(make_settings, messages_server):
    long_files = [
        (f"backend/app/routes/r{i}.py", f"# route {i}\n" + "x = 1\n" * 60) for i in range(6)
    ]
    messages_server.phase_files["BE_ROUTES"] = long_files
    settings = make_settings(phases={"BE_ROUTES": {"max_tokens": 300}})
    async with running(settings):
        await produce(settings, request_bytes(request_id="tight"))
        events = await collect(settings, "tight")
    routes = next(e for e in by_type(events, "phase.completed") if e.phase == "BE_ROUTES")
    assert sorted(f.path for f in routes.files) == sorted(p for p, _ in long_files)
    assert {f.path: f.content for f in routes.files} == dict(long_files)
    assert routes.usage.calls == len(messages_server.calls_for("BE_ROUTES")) > 1


async def test_rate_limits_are_retried(make_settings, messages_server):
    settings = make_settings()
    messages_server.enqueue(
        "DB",
        Reply(status=429, headers={"retry-after-ms": "50"}),
        Reply(status=529, headers={"retry-after-ms": "50"}),
    )
    async with running(settings):
        await produce(settings, request_bytes(request_id="limited"))
        events = await collect(settings, "limited")
    assert events[-1].status == "completed"
    assert len(messages_server.calls_for("DB")) == 3


async def test_image_mockups_are_sent_as_image_blocks(make_settings, messages_server):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
    settings = make_settings(jobs={"max_concurrent": 1})
    mockup = {"kind": "image", "media_type": "image/png", "data": png, "notes": "dark theme"}
    async with running(settings):
        await produce(
            settings, request_bytes(request_id="img", mockup=mockup, options={"phases": ["DB"]})
        )
        events = await collect(settings, "img")
    assert events[0].phases == ["ARCH", "DB", "VERIFY"] and events[-1].status == "completed"
    content = messages_server.calls_for("ARCH")[0].body["messages"][0]["content"]
    image = next(block for block in content if block["type"] == "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": png}
    GenerationRequest.model_validate_json(request_bytes(mockup=mockup))


async def test_an_event_too_large_to_publish_goes_out_without_contents(
    make_settings, messages_server
):
    big = [(f"frontend/src/pages/Big{i}.tsx", "export const x = 1;\n" * 200) for i in range(3)]
    messages_server.phase_files["FE_PAGES"] = big
    settings = make_settings(kafka={"max_publish_bytes": 12_000})
    async with running(settings):
        await produce(settings, request_bytes(request_id="huge"))
        events = await collect(settings, "huge")
    assert events[-1].status == "completed"
    pages = next(e for e in by_type(events, "phase.completed") if e.phase == "FE_PAGES")
    assert [f.content for f in pages.files] == ["", "", ""]
    assert "file contents left out" in pages.warnings[-1]
    assert [f.size for f in pages.files] == [len(c) for _, c in big]
    store = Store(settings.store.path)
    try:
        assert {f.path: f.content for f in store.files("huge", "FE_PAGES")} == dict(big)
    finally:
        store.close()


async def test_intake_pauses_while_too_many_jobs_are_unfinished(make_settings, messages_server):
    messages_server.latency_s = 0.05
    settings = make_settings(
        jobs={"max_concurrent": 1, "max_unfinished": 2}, kafka={"topic_partitions": 1}
    )
    highest = 0

    def peek(body):
        nonlocal highest
        store = Store(settings.store.path)
        try:
            highest = max(highest, store.unfinished_jobs())
        finally:
            store.close()
        return messages_server.default_responder(body)

    messages_server.responder = peek
    async with running(settings):
        await produce(settings, *(request_bytes(request_id=f"bp-{i}") for i in range(5)))
        for i in range(5):
            assert (await collect(settings, f"bp-{i}"))[-1].status == "completed"
    assert highest == 2  # never more jobs in the store than the limit, and all got done
