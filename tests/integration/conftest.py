"""Integration fixtures: the real daemon in-process, the real SDK against the local
Messages API server, the real broker, SQLite in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.client import Client
from daemon.llm import LLMProvider
from daemon.models import Event
from daemon.settings import Settings, load_settings
from daemon.worker import Daemon
from tests.conftest import BOOTSTRAP_ENV
from tests.fake_anthropic import MessagesServer

EVENT_TIMEOUT_S = 60.0


@pytest.fixture
def messages_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesServer]:
    with MessagesServer() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged")
        yield server


@pytest.fixture
def make_settings(
    tmp_path, kafka_bootstrap, topic_names, messages_server
) -> Callable[..., Settings]:
    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "requests_topic": topic_names.requests,
                "events_topic": topic_names.events,
                "dead_letter_topic": topic_names.dlq,
                "group_id": f"codegend-{topic_names.suffix}",
                "topic_partitions": 2,
                # tansu holds a group's join for half the session timeout: keep it short
                # (real Kafka wants >= 6000, see group.min.session.timeout.ms).
                "session_timeout_ms": 6000 if os.environ.get(BOOTSTRAP_ENV) else 2000,
                "heartbeat_interval_ms": 500,
            },
            "store": {"path": tmp_path / "codegend.db"},
            "llm": {"provider": "anthropic", "timeout_s": 20},
            # CODEGEND_TEST_EXECUTION=parallel runs the same tests in parallel mode.
            "jobs": {
                "shutdown_grace_s": 10,
                "execution": os.environ.get("CODEGEND_TEST_EXECUTION", "sequential"),
            },
            "output": {"dir": tmp_path / "out"},
            "metrics": {"port": 0},  # a free port: daemons side by side do not collide
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return load_settings(**base)

    return make


def replay_settings(
    make_settings: Callable[..., Settings],
    live: Settings,
    cassette: Path,
    tmp_path: Path,
    **sections: Any,
) -> Settings:
    """A second daemon replaying ``cassette``: topics, group and store of its own."""
    kafka = live.kafka
    return make_settings(
        kafka={
            "requests_topic": kafka.requests_topic + "-replay",
            "events_topic": kafka.events_topic + "-replay",
            "group_id": kafka.group_id + "-replay",
        },
        llm={"provider": "replay", "cassette_dir": cassette},
        store={"path": tmp_path / "replay.db"},
        output={"dir": tmp_path / "replayed"},
        **sections,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, llm: LLMProvider | None = None) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, llm=llm)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        await task
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 60)


async def collect(
    settings: Settings, job_id: str, completions: int = 1, timeout_s: float = EVENT_TIMEOUT_S
) -> list[Event]:
    """Every event of a job, until its ``completions``-th job.completed (one per run)."""
    found: list[Event] = []
    async with Client(settings) as client, asyncio.timeout(timeout_s):
        async for event in client.events(job_id, follow=True, until_completed=completions):
            found.append(event)
    return found


async def raw_events(settings: Settings, timeout_s: float = 5.0) -> list[Event]:
    """Everything on the events topic now, duplicates included."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(settings.kafka.events_topic, p)
            for p in sorted(consumer.partitions_for_topic(settings.kafka.events_topic) or [])
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Event] = []
        async with asyncio.timeout(timeout_s):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(Event.model_validate_json(r.value) for r in records)
        return found
    finally:
        await consumer.stop()
