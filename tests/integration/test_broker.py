"""The embedded tansu broker and topic set-up, against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

import daemon.broker as broker_mod
from daemon.broker import EmbeddedBroker
from daemon.errors import BrokerError
from daemon.topics import ensure_topics


def _pid_alive(pid: int) -> bool:
    """True if a process with that pid exists (a zombie counts: it has not been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def test_broker_starts_answers_and_stops() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    pid = broker.pid
    assert pid is not None and _pid_alive(pid)
    host, port = broker.bootstrap_servers.split(":")
    assert host == "127.0.0.1" and int(port) == broker.port
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        assert isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()
    await broker.stop()
    assert not _pid_alive(pid)
    assert not broker.running and broker.pid is None
    await broker.stop()  # idempotent
    with pytest.raises(BrokerError):
        _ = broker.bootstrap_servers


async def test_async_context_manager_removes_its_log() -> None:
    async with EmbeddedBroker() as broker:
        log_path = broker.log_path
        pid = broker.pid
        assert log_path is not None and log_path.exists()
    assert pid is not None and not _pid_alive(pid)
    assert not log_path.exists()


def test_sync_start_stop() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert broker.running
        with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
            pass
    assert pid is not None and not _pid_alive(pid)
    broker.stop_sync()  # idempotent


async def test_retries_on_a_port_taken_before_tansu_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1]])
        real_free_port = broker_mod.free_port
        monkeypatch.setattr(broker_mod, "free_port", lambda: next(ports, None) or real_free_port())
        async with EmbeddedBroker() as broker:
            assert broker.port != squatter.getsockname()[1]
            assert broker.running


async def test_missing_binary_is_a_broker_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="cannot run tansu"):
        await EmbeddedBroker(binary=str(tmp_path / "no-such-tansu")).start()


def _fake_broker(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-tansu"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_early_exit_is_a_broker_error_with_log_tail(tmp_path: Path) -> None:
    binary = _fake_broker(tmp_path, "echo fake-tansu-cannot-start; exit 3")
    with pytest.raises(BrokerError, match="(?s)code 3.*fake-tansu-cannot-start"):
        await EmbeddedBroker(binary=binary).start()


async def test_not_ready_in_time_is_a_broker_error_and_the_process_is_gone(
    tmp_path: Path,
) -> None:
    binary = _fake_broker(tmp_path, "echo fake-tansu-hangs; exec sleep 60")
    broker = EmbeddedBroker(binary=binary, ready_timeout=0.5)
    with pytest.raises(BrokerError, match="(?s)not ready within.*fake-tansu-hangs"):
        await broker.start()
    assert broker.pid is None and not broker.running


async def test_produce_consume_round_trips_value_key_and_headers(
    kafka_bootstrap: str, topic_names
) -> None:
    topic = topic_names.requests
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    headers = [("trace-id", b"abc-123"), ("empty", b""), ("dup", b"1"), ("dup", b"2")]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"hello": 1}', key=b"job-1", headers=headers)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, meta.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        msg = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert (msg.value, msg.key, msg.offset) == (b'{"hello": 1}', b"job-1", meta.offset)
    assert list(msg.headers) == headers


async def test_ensure_topics_creates_topics_with_partitions(
    kafka_bootstrap: str, topic_names
) -> None:
    topics = topic_names.all()
    await ensure_topics(kafka_bootstrap, topics, partitions=3)
    assert await _partition_counts(kafka_bootstrap, topics) == dict.fromkeys(topics, 3)
    await ensure_topics(kafka_bootstrap, topics, partitions=3)  # already there: a no-op
    assert await _partition_counts(kafka_bootstrap, topics) == dict.fromkeys(topics, 3)


async def test_ensure_topics_leaves_an_existing_topic_and_warns(
    kafka_bootstrap: str, topic_names, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(kafka_bootstrap, [topic_names.events], partitions=2)
    with caplog.at_level(logging.WARNING, logger="daemon.topics"):
        await ensure_topics(kafka_bootstrap, [topic_names.events, topic_names.dlq], partitions=1)
    counts = await _partition_counts(kafka_bootstrap, [topic_names.events, topic_names.dlq])
    assert counts == {topic_names.events: 2, topic_names.dlq: 1}
    assert "has 2 partitions, not the 1 asked for" in caplog.text
