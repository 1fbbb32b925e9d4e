"""``codegend watch`` in subprocesses against a scripted events topic (no daemon): the live
view on a terminal, one line per event otherwise, JSON lines, and the exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka import AIOKafkaProducer

from daemon.topics import ensure_topics
from tests.support.processes import codegend
from tests.support.watch_events import T0, job_events, make_event

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


STATUSES = ("completed", "failed", "partial", "cancelled")


@pytest.fixture
def env(tmp_path, kafka_bootstrap, topic_names):
    async def script() -> None:
        await ensure_topics(kafka_bootstrap, [topic_names.events], 2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for status in STATUSES:
                events = job_events(f"job-{status}", status)
                # The relay re-publishes after a crash: every event arrives twice.
                for event in [*events, *events]:
                    await producer.send_and_wait(
                        topic_names.events,
                        event.to_json(),
                        key=event.job_id.encode(),
                        headers=[("type", event.type.encode())],
                    )
            rejected = make_event(
                event_id=uuid.uuid4().hex,
                type="job.rejected",
                job_id="job-rejected",
                request_id="job-rejected",
                seq=1,
                ts=T0,
                error="invalid GenerationRequest: project_name: String should match pattern",
            )
            await producer.send_and_wait(
                topic_names.events, rejected.to_json(), key=b"job-rejected"
            )
        finally:
            await producer.stop()

    asyncio.run(script())
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CODEGEND_", "TTY_"))},
        "CODEGEND_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CODEGEND_KAFKA__EVENTS_TOPIC": topic_names.events,
        "CODEGEND_STORE__PATH": str(tmp_path / "codegend.db"),
    }


def test_exit_codes_lines_json_and_the_live_view(env):
    terminal = {**env, "TTY_COMPATIBLE": "1", "COLUMNS": "90", "LINES": "40"}
    runs = {
        "completed": (env, ["watch", "job-completed"]),
        "failed": (env, ["watch", "job-failed", "--json"]),
        "partial": (terminal, ["watch", "job-partial"]),
        "cancelled": (terminal, ["watch", "job-cancelled", "--plain"]),
        "rejected": (env, ["watch", "job-rejected"]),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {
            name: pool.submit(codegend, variables, *args, check=False, timeout=60)
            for name, (variables, args) in runs.items()
        }
    results = {name: future.result() for name, future in futures.items()}
    codes = {name: result.returncode for name, result in results.items()}
    assert codes == {"completed": 0, "failed": 1, "partial": 2, "cancelled": 3, "rejected": 1}

    lines = results["completed"].stdout.splitlines()  # not a terminal: one line per event
    assert len(lines) == 6  # each event once, though the topic holds it twice
    assert "job.accepted" in lines[0] and "shop: 2 phases" in lines[0]
    assert "ARCH: 1 files, 1630 output tokens, 6.1 s" in lines[2]
    assert "job.completed" in lines[-1] and "completed: 1 files" in lines[-1]

    as_json = [json.loads(line) for line in results["failed"].stdout.splitlines()]
    assert [e["seq"] for e in as_json] == [1, 2, 3, 4, 5, 6]
    assert as_json[-1]["status"] == "failed" and as_json[4]["error"] == "boom"

    live = ANSI.sub("", results["partial"].stdout)  # the last frame stays on the screen
    assert "job-partial · shop · partial" in live
    assert "2/2 phases" in live and "1 files · 1,630 output tokens" in live
    assert re.search(r"1\s+ARCH\s+✓ done\s+1\s+1,630\s+6\.1 s", live)
    assert re.search(r"2\s+DB\s+✗ failed\s+.*boom", live)

    assert "cancelled: 1 files" in results["cancelled"].stdout.splitlines()[-1]
    assert "job.rejected" in results["rejected"].stdout
    for result in results.values():
        assert "Traceback" not in result.stderr
