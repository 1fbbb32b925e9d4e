"""The session broker's topics as the tests use them: names no other test shares, requests
produced onto them, and every event read back raw."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from daemon.contract import Event, parse_event
from daemon.settings import Settings

BOOTSTRAP_ENV = "CODEGEND_TEST_BOOTSTRAP"


@dataclass(frozen=True)
class TopicNames:
    """Topic names that no other test uses (they share one broker)."""

    suffix: str
    requests: str
    events: str
    dlq: str

    def all(self) -> list[str]:
        """The three names, requests first."""
        return [self.requests, self.events, self.dlq]

    @property
    def changelog(self) -> str:
        """The changelog topic of cluster mode, on by default against a real broker."""
        return f"codegend-changelog-{self.suffix}"

    @property
    def commands(self) -> str:
        return f"codegend-commands-{self.suffix}"


async def produce(settings: Settings, *values: bytes, key: bytes | None = None) -> None:
    """Each value onto the requests topic, as it is."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.kafka.requests_topic, value, key=key)
    finally:
        await producer.stop()


async def produce_keyed(settings: Settings, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Each ``(key, value)`` onto the requests topic: the producer's partitioner (murmur2,
    as the contract's producers use) picks each record's partition from its key."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.kafka.requests_topic, value, key=key)
    finally:
        await producer.stop()


async def raw_events(settings: Settings, timeout_s: float = 5.0) -> list[Event]:
    """Everything on the events topic now, duplicates included."""
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
                    found.extend(parse_event(r.value) for r in records)
        return found
    finally:
        await consumer.stop()
