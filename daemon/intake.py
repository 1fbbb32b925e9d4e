"""Intake: requests from the topic become jobs in the store, then their offsets are committed.

A message that cannot become a job (not JSON, invalid, too large) goes to the dead-letter
topic unchanged, with ``error`` and ``source`` headers; it gets a ``job.rejected`` event
when it names a request_id; its offset is committed all the same, so one bad message
never stalls the partition. Intake never waits for phase work: jobs wait in the store.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, MessageSizeTooLargeError
from pydantic import ValidationError

from daemon import chaos
from daemon.metrics import Metrics
from daemon.models import REQUEST_ID_PATTERN, GenerationRequest, ImageMockup, field_errors
from daemon.settings import KafkaSettings
from daemon.states import plan_phases
from daemon.store import Store

log = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 500
MAX_RECORDS_PER_POLL = 200
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


@dataclass(frozen=True)
class Rejection:
    error: str
    request_id: str | None


class Intake:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: Store,
        kafka: KafkaSettings,
        max_image_bytes: int,
        on_new_work: Callable[[], None],
        max_unfinished: int = 0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._max_unfinished = max_unfinished
        self._max_image_bytes = max_image_bytes
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._kafka = kafka
        self._on_new_work = on_new_work
        self._running = True
        # Per partition, the offset after the last record that is a job or on the DLQ.
        self._processed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def subscribe(self) -> None:
        self._consumer.subscribe([self._kafka.requests_topic], listener=_CommitOnRevoke(self))

    def stop(self) -> None:
        self._running = False

    async def run(self) -> None:
        while self._running:
            batches = await self._consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS_PER_POLL
            )
            for tp, records in batches.items():
                for record in records:
                    if self._full():
                        self._consumer.seek(tp, record.offset)  # read again once there is room
                        break
                    await self.handle(record)
                    self._processed[tp] = record.offset + 1
                await self.commit([tp])
            if batches:
                self._on_new_work()
            self._resume_when_room()

    def _full(self) -> bool:
        """Too many unfinished jobs: pause every partition (the poll loop keeps running, so
        the group membership stays alive) until they drop below nine tenths of the limit."""
        if not self._max_unfinished:
            return False
        unfinished = self._store.unfinished_jobs()
        if unfinished < self._max_unfinished:
            return False
        if not self._consumer.paused():
            self._consumer.pause(*self._consumer.assignment())
            log.warning("%d unfinished jobs: pausing intake (jobs.max_unfinished)", unfinished)
        return True

    def _resume_when_room(self) -> None:
        paused = self._consumer.paused()
        if paused and self._store.unfinished_jobs() < self._max_unfinished * 0.9:
            self._consumer.resume(*paused)
            log.info("resuming intake")

    async def commit(self, partitions: Iterable[TopicPartition]) -> None:
        """Commit what is processed: every record before the offset is a job or on the DLQ."""
        offsets = {
            tp: self._processed[tp]
            for tp in partitions
            if self._processed.get(tp, -1) > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        self._store.sync()  # the jobs are on disk before Kafka forgets their requests
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member; it reads these requests again and
            # finds their jobs already in the store.
            log.warning("offsets %s not committed: %s", offsets, exc)
            return
        self._committed.update(offsets)

    async def handle(self, record: ConsumerRecord) -> None:
        source = f"{record.topic}:{record.partition}:{record.offset}"
        outcome = self.parse(record.value or b"")
        if isinstance(outcome, Rejection):
            self._metrics.requests.labels("rejected").inc()
            await self._reject(record, source, outcome)
            return
        job_id = outcome.request_id or source
        created = self._store.create_job(
            job_id, outcome, source, plan_phases(outcome.options.phases)
        )
        chaos.point("after_create", job_id)
        self._metrics.requests.labels("accepted" if created else "duplicate").inc()
        log.info(
            "%s job for %s from %s",
            "accepted" if created else "duplicate request; no new",
            outcome.project_name,
            source,
            extra={"job_id": job_id},
        )

    def parse(self, value: bytes) -> GenerationRequest | Rejection:
        if len(value) > self._kafka.max_request_bytes:
            return Rejection(
                f"message of {len(value)} bytes exceeds kafka.max_request_bytes "
                f"({self._kafka.max_request_bytes})",
                _sniff_request_id(value[:4096]),
            )
        try:
            raw = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Rejection(f"not JSON: {exc}", None)
        request_id = raw.get("request_id") if isinstance(raw, dict) else None
        request_id = (
            request_id if isinstance(request_id, str) and _REQUEST_ID.match(request_id) else None
        )
        try:
            request = GenerationRequest.model_validate(raw)
        except ValidationError as exc:
            return Rejection(_describe(exc), request_id)
        mockup = request.mockup
        if isinstance(mockup, ImageMockup) and mockup.size_bytes > self._max_image_bytes:
            return Rejection(
                f"mockup image of {mockup.size_bytes} bytes exceeds llm.max_image_bytes "
                f"({self._max_image_bytes})",
                request_id,
            )
        return request

    async def _reject(self, record: ConsumerRecord, source: str, rejection: Rejection) -> None:
        log.warning(
            "rejected message %s: %s",
            source,
            rejection.error,
            extra={"job_id": rejection.request_id or "-"},
        )
        await self._dead_letter(record, source, rejection.error)
        if rejection.request_id is not None:
            self._store.emit(
                rejection.request_id, rejection.request_id, "job.rejected", error=rejection.error
            )

    async def _dead_letter(self, record: ConsumerRecord, source: str, error: str) -> None:
        headers = [
            *(record.headers or ()),
            ("error", error[:1000].encode()),
            ("source", source.encode()),
        ]
        value = record.value or b""
        limit = self._kafka.dead_letter_max_bytes
        if len(value) > limit:
            value, headers = (
                value[:limit],
                [*headers, ("truncated", str(len(record.value or b"")).encode())],
            )
        try:
            await self._producer.send_and_wait(
                self._kafka.dead_letter_topic, value, key=record.key, headers=headers
            )
        except MessageSizeTooLargeError:
            await self._producer.send_and_wait(
                self._kafka.dead_letter_topic,
                value[: limit // 2],
                key=record.key,
                headers=[*headers, ("truncated", str(len(value)).encode())],
            )


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member, commit what was processed on them."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._intake.commit(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("consuming %s", ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)))


def _sniff_request_id(head: bytes) -> str | None:
    match = re.search(rb'"request_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"', head)
    return match.group(1).decode() if match else None


def _describe(exc: ValidationError) -> str:
    return "invalid GenerationRequest: " + "; ".join(field_errors(exc, "request", limit=10))
