"""Records on the events topic that are not events (bytes that are not JSON, JSON of
another shape, an event missing its fields, a tombstone) are skipped with one warning each:
``codegend watch`` and ``Client.events`` follow the job past them to its end."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from aiokafka import AIOKafkaProducer

from daemon.client import Client
from daemon.settings import load_settings
from daemon.topics import ensure_topics
from tests.support.processes import CODEGEND, ROOT, wait_for
from tests.support.watch_events import job_events

JOB = "job-garbage"
GARBAGE: list[bytes | None] = [
    b"not json at all \xff",
    b'{"hello": "world"}',
    b'{"event_id": "e", "type": "job.accepted", "job_id": "job-garbage", "seq": 1}',
    b"[" * 5000,
    None,  # a tombstone
]


async def _produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=JOB.encode())
    finally:
        await producer.stop()


@pytest.fixture
def env(tmp_path, kafka_bootstrap, topic_names):
    asyncio.run(ensure_topics(kafka_bootstrap, [topic_names.events], 2))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODEGEND_")},
        "PYTHONPATH": str(ROOT),
        "CODEGEND_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CODEGEND_KAFKA__EVENTS_TOPIC": topic_names.events,
        "CODEGEND_STORE__PATH": str(tmp_path / "codegend.db"),
    }


def test_watch_and_client_follow_a_job_past_records_that_are_not_events(env, tmp_path):
    bootstrap, topic = env["CODEGEND_KAFKA__BOOTSTRAP_SERVERS"], env["CODEGEND_KAFKA__EVENTS_TOPIC"]
    events = [event.to_json() for event in job_events(JOB, "completed")]
    asyncio.run(_produce(bootstrap, topic, [*GARBAGE, *events[:3]]))
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        watcher = subprocess.Popen(
            [*CODEGEND, "watch", JOB], env=env, stdout=stdout, stderr=stderr, cwd=ROOT
        )
    try:
        wait_for(lambda: len(out.read_text().splitlines()) >= 3, timeout_s=30)
        assert watcher.poll() is None  # following, past the garbage
        asyncio.run(_produce(bootstrap, topic, [*GARBAGE, *events[3:]]))
        assert watcher.wait(timeout=30) == 0, err.read_text()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    lines = out.read_text().splitlines()
    assert len(lines) == len(events)
    assert "job.accepted" in lines[0] and "job.completed" in lines[-1]
    warnings = err.read_text()
    assert "Traceback" not in warnings
    assert warnings.count("skipping the record") == 2 * len(GARBAGE)  # once per record
    assert warnings.count("a tombstone") == 2

    async def follow() -> list[str]:
        settings = load_settings(kafka={"bootstrap_servers": bootstrap, "events_topic": topic})
        async with Client(settings) as client, asyncio.timeout(30):
            return [event.type async for event in client.events(JOB)]

    types = asyncio.run(follow())
    assert types[0] == "job.accepted" and types[-1] == "job.completed"
    assert len(types) == len(events)
