"""A client for programs: submit requests and follow a job's events.

    async with Client(settings) as client:
        job_id = await client.submit(request)
        async for event in client.events(job_id):
            print(event.type, event.phase)

``events`` de-duplicates on event_id, yields in seq order, and ends with job.completed.
A record on the topic that is not an event (a tombstone, other bytes) is skipped with a
warning.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from daemon.contract import Event, GenerationRequest, is_derived_job_id, parse_event
from daemon.errors import BadRequest, ConfigError
from daemon.kafka import client_options, make_producer
from daemon.settings import EMBEDDED, Settings

log = logging.getLogger(__name__)
TERMINAL_EVENTS = frozenset({"job.completed"})
POLL_MS = 500
CAUGHT_UP_MS = 150  # after a job.completed: is a job.resumed right behind it?


def resolve_bootstrap(settings: Settings, address_file: Path | None = None) -> str:
    """The brokers to talk to; ``embedded`` means the broker of a daemon running on this store."""
    servers = settings.kafka.bootstrap_servers
    if servers != EMBEDDED:
        return servers
    address_file = address_file or settings.store.path.with_name(
        settings.store.path.name + ".broker"
    )
    if not address_file.is_file():
        raise ConfigError(
            "kafka.bootstrap_servers is 'embedded' but no daemon with an embedded broker runs on "
            f"store {settings.store.path}; start `codegend run` or set CODEGEND_KAFKA__BOOTSTRAP_SERVERS"
        )
    return address_file.read_text().strip()


class Client:
    def __init__(self, settings: Settings, bootstrap_servers: str | None = None) -> None:
        self._settings = settings
        self._bootstrap = bootstrap_servers or resolve_bootstrap(settings)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def submit(self, request: GenerationRequest) -> str:
        """Produce a request; returns the job id it will run as. A request_id of the
        derived form (``topic:partition:offset``), which intake rejects, raises BadRequest."""
        if request.request_id is not None and is_derived_job_id(request.request_id):
            raise BadRequest(
                f"request_id {request.request_id!r} has the form topic:partition:offset, "
                "the job id of a request without a request_id; choose another"
            )
        kafka = self._settings.kafka
        if self._producer is None:
            self._producer = make_producer(kafka, self._bootstrap)
            await self._producer.start()
        key = request.request_id.encode() if request.request_id else None
        value = request.model_dump_json(exclude_none=True).encode()
        meta = await self._producer.send_and_wait(kafka.requests_topic, value, key=key)
        return request.request_id or f"{meta.topic}:{meta.partition}:{meta.offset}"

    async def events(
        self, job_id: str | None = None, follow: bool = True, until_completed: int = 1
    ) -> AsyncGenerator[Event, None]:
        """Events of one job (or of all jobs), from the start of the topic, in seq order,
        without duplicates.

        With a job id, ends once the job's last event on the topic is a job.completed (a
        job resumed after it ended goes on to its next one), after at least
        ``until_completed`` of them; ``follow=False`` ends at the topic's end.
        """
        completions = 0
        consumer = await self._open_events_consumer()
        order = SeqOrder()
        try:
            async for arrived in _read(consumer, follow, quick=lambda: order.ended):
                if arrived is None:  # caught up with the topic
                    if order.ended:
                        return
                    continue
                if job_id is not None and arrived.job_id != job_id:
                    continue
                for event in order.take(arrived):
                    yield event
                    if job_id is not None:
                        completions += event.type in TERMINAL_EVENTS
                        order.ended = (
                            event.type in TERMINAL_EVENTS and completions >= until_completed
                        )
        finally:
            await consumer.stop()

    async def _open_events_consumer(self) -> AIOKafkaConsumer:
        """A consumer of every partition of the events topic from its start, in no group:
        subscribers keep no offsets here, they read the whole history of a job."""
        kafka = self._settings.kafka
        consumer = AIOKafkaConsumer(
            kafka.events_topic,
            bootstrap_servers=self._bootstrap,
            **client_options(kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            max_partition_fetch_bytes=kafka.max_publish_bytes + 64 * 1024,
            fetch_max_bytes=max(52_428_800, kafka.max_publish_bytes + 64 * 1024),
        )
        await consumer.start()
        return consumer


class SeqOrder:
    """Puts each job's events in seq order, once each. A re-published event repeats its
    seq (and event_id) and is dropped; one that arrives ahead of a missing seq (a batch
    the broker failed and the relay sent again after later ones) waits for it. A job's
    history is read from its first event, seq 1."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._waiting: dict[str, dict[int, Event]] = {}
        self.ended = False  # the followed job's last event so far is its job.completed

    def take(self, event: Event) -> list[Event]:
        expected = self._next.get(event.job_id, 1)
        if event.seq < expected:
            return []
        waiting = self._waiting.setdefault(event.job_id, {})
        waiting.setdefault(event.seq, event)
        ready = []
        while expected in waiting:
            ready.append(waiting.pop(expected))
            expected += 1
        self._next[event.job_id] = expected
        return ready


async def _read(
    consumer: AIOKafkaConsumer, follow: bool, quick: Callable[[], bool]
) -> AsyncIterator[Event | None]:
    """Events as they are on the topic, and None each time it has nothing more for now.
    ``quick()`` true: look for more only briefly (a job that seems over)."""
    while True:
        batches = await consumer.getmany(timeout_ms=CAUGHT_UP_MS if quick() else POLL_MS)
        for records in batches.values():
            for record in records:
                event = _event_of(record)
                if event is not None:
                    yield event
        if not batches:
            if not follow:
                return
            yield None


def _event_of(record: ConsumerRecord[bytes, bytes]) -> Event | None:
    """The record's event, or None (with one warning) for a record that is not one: a
    tombstone, bytes that are not JSON, JSON that is not an Event. Anyone who can write to
    the topic can put such a record there, and retention keeps it: it must not stop a reader."""
    where = f"{record.topic}:{record.partition}:{record.offset}"
    if record.value is None:
        log.warning("skipping the record at %s: a tombstone, not an event", where)
        return None
    try:
        return parse_event(record.value)
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        log.warning(
            "skipping the record at %s: not an event (%s)", where, problem.get("msg", "invalid")
        )
        return None
