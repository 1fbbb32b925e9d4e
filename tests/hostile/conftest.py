"""Hostile-tier fixtures: ONE real daemon in-process per test (the real broker of the session,
the real SDK against the local Messages API server, SQLite in tmp_path), fed with raw bytes.

``hostile`` is that daemon with helpers: ``send`` produces raw records (any bytes, headers,
a chosen partition), ``dead_letters`` reads the dead-letter topic, ``wait_committed`` waits
until the daemon's group has committed past records, ``get`` asks the health endpoint,
``completed`` follows a job to its end. Settings come from ``make_settings`` of
tests/conftest.py (the defaults, and the broker-specific values explained there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata

from daemon.contract import Event
from daemon.service import Daemon
from daemon.settings import Settings
from tests.support.daemons import collect, running
from tests.support.health import get
from tests.support.messages_server import MessagesServer

WAIT_S = 30.0


def source_of(meta: RecordMetadata) -> str:
    """Where the daemon read a record: its ``source`` header, and the job id it derives."""
    return f"{meta.topic}:{meta.partition}:{meta.offset}"


@dataclass
class Hostile:
    settings: Settings
    daemon: Daemon
    server: MessagesServer
    producer: AIOKafkaProducer
    _dead: dict[str, ConsumerRecord] = field(default_factory=dict)
    _dlq: AIOKafkaConsumer | None = None

    async def send(
        self,
        *values: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> list[RecordMetadata]:
        """Produce each value as it is (None: a tombstone), all in one batch."""
        topic = self.settings.kafka.requests_topic
        sent = [
            await self.producer.send(topic, v, key=key, headers=headers, partition=partition)
            for v in values
        ]
        return list(await asyncio.gather(*sent))

    async def dead_letters(self, metas: list[RecordMetadata]) -> list[ConsumerRecord]:
        """The dead letter of each record (by its ``source`` header), in the same order."""
        wanted = [source_of(m) for m in metas]
        async with asyncio.timeout(WAIT_S):
            while not all(s in self._dead for s in wanted):
                await self._read_dead_letters()
        return [self._dead[s] for s in wanted]

    async def all_dead_letters(self) -> dict[str, ConsumerRecord]:
        """Every dead letter on the topic now, by source (fails on two for one source)."""
        consumer = self._dlq_consumer()
        async with asyncio.timeout(WAIT_S):
            while not (partitions := consumer.assignment()):
                await self._read_dead_letters()
            ends = await consumer.end_offsets(list(partitions))
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                await self._read_dead_letters()
        return dict(self._dead)

    async def _read_dead_letters(self) -> None:
        for records in (await self._dlq_consumer().getmany(timeout_ms=200)).values():
            for record in records:
                source = _header(record, "source").decode()
                assert source not in self._dead, f"two dead letters for {source}"
                self._dead[source] = record

    async def wait_committed(self, metas: list[RecordMetadata]) -> None:
        """Until the daemon's group has committed past every one of ``metas``."""
        ends: dict[TopicPartition, int] = {}
        for meta in metas:
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        async with asyncio.timeout(WAIT_S):
            for tp, end in ends.items():
                while (await self.daemon.consumer.committed(tp) or 0) < end:
                    await asyncio.sleep(0.1)

    async def get(self, path: str) -> tuple[int, str]:
        assert self.daemon.metrics_port
        return await asyncio.wait_for(get(self.daemon.metrics_port, path), 1.0)

    async def completed(self, job_id: str) -> list[Event]:
        return await collect(self.settings, job_id)

    def alive(self) -> bool:
        return not any(task.done() for task in self.daemon._tasks)

    def jobs_by_source(self) -> dict[str, str]:
        return dict(self.daemon.store.db.conn.execute("SELECT source, job_id FROM jobs"))

    @staticmethod
    def header(record: ConsumerRecord, name: str) -> bytes:
        """The value of the one header called ``name`` (fails if there are none or several)."""
        return _header(record, name)

    @staticmethod
    def source_of(meta: RecordMetadata) -> str:
        return source_of(meta)

    def _dlq_consumer(self) -> AIOKafkaConsumer:
        assert self._dlq is not None
        return self._dlq

    async def start(self) -> None:
        self._dlq = AIOKafkaConsumer(
            self.settings.kafka.dead_letter_topic,
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
        )
        await self._dlq.start()

    async def close(self) -> None:
        if self._dlq is not None:
            await self._dlq.stop()


def _header(record: ConsumerRecord, name: str) -> bytes:
    [value] = [v for k, v in record.headers or () if k == name]
    return value


@pytest.fixture
async def hostile(make_settings, messages_server) -> AsyncIterator[Hostile]:
    """One running daemon at the integration tier's settings, with the helpers above."""
    settings = make_settings()
    async with running(settings) as daemon:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        found = Hostile(settings, daemon, messages_server, producer)
        try:
            await found.start()
            yield found
        finally:
            await found.close()
            await producer.stop()
