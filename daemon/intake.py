"""Intake: requests from the topic become jobs in the store, then their offsets are committed.

Every message has exactly one outcome, whatever its bytes: a job (or the job it repeats), or
the dead-letter topic. A message that cannot become a job (not JSON, nested too deep,
invalid, too large, a request_id of the derived form, a model that is not allowed) goes to
the dead-letter topic unchanged, with ``error`` and ``source`` headers that are ours alone
(the producer's headers of those names are kept as ``original-*``); it gets a
``job.rejected`` event when it names a request_id that no job has, once per request_id (the
event is stored before the dead letter is sent, so a message read again finds it and is not
announced twice); its offset is committed once the dead letter is acknowledged, so a bad
message holds up its partition only while the broker does not take its dead letter. Intake
never waits for phase work: jobs wait in the store.

Intake waits, still polling (so it stays in the group), paused where it must wait, and tries
again after a backoff that doubles from 1 s up to 30 s:

- when the store's disk is full, at a write or at the sync before a commit: every partition
  waits, the same message is tried again (or the commit, even if no message follows), and
  ``/readyz`` says why until the store takes a write again; nothing is skipped;
- when a dead letter cannot be sent (any KafkaError: the broker down, a timeout, even an
  empty dead letter refused as too large): its partition keeps its position, nothing past
  the message is committed, the other partitions go on, and the message is read again and
  its dead letter sent at the next try. A stop meanwhile leaves it to the next start.

A rebalance forgets every pause: a partition that must still wait is paused again at its
first record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import pydantic_core
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)
from pydantic import ValidationError

from daemon import chaos
from daemon.changelog_writer import ChangelogWriter
from daemon.contract import (
    REQUEST_ID_PATTERN,
    GenerationRequest,
    ImageMockup,
    JobRejected,
    field_errors,
    is_derived_job_id,
)
from daemon.errors import JobNotFound, StoreFull
from daemon.holds import Backoff, DiskHold
from daemon.logs import printable
from daemon.metrics import Metrics
from daemon.ownership import Ownership
from daemon.settings import KafkaSettings
from daemon.states import plan_phases
from daemon.store import Store

log = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 500
MAX_RECORDS_PER_POLL = 200
MAX_ERROR_CHARS = 1000  # the error header and the job.rejected event
MAX_FALLBACK_KEY_BYTES = 1024
OUR_HEADERS = ("error", "source", "truncated")
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


@dataclass(frozen=True)
class Rejection:
    error: str
    request_id: str | None  # a usable request_id the message names, for its job.rejected


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
        allowed_models: Collection[str] | None = None,
        verify: bool = True,
        cluster: Cluster | None = None,
    ) -> None:
        self._cluster = cluster
        self._metrics = metrics or Metrics()
        self._verify = verify  # whether jobs end with the VERIFY state
        self._max_unfinished = max_unfinished
        self._max_image_bytes = max_image_bytes
        self._allowed_models = allowed_models  # None: any model
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._kafka = kafka
        self._on_new_work = on_new_work
        self._running = True
        # Per partition, the offset after the last record that is a job or on the DLQ.
        self._processed: dict[TopicPartition, int] = {}
        # Cluster mode: per partition, (offset after a record, the last changelog mark
        # then); the offset is committed once the writer has confirmed that mark.
        self._replicating: dict[TopicPartition, list[tuple[int, int]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._disk = DiskHold(metrics=self._metrics)
        # Partitions whose next message waits for its dead letter to be sent.
        self._unsent: dict[TopicPartition, Backoff] = {}

    def subscribe(self) -> None:
        listener = (
            _CommitOnRevoke(self) if self._cluster is None else _Rebalance(self, self._cluster)
        )
        self._consumer.subscribe([self._kafka.requests_topic], listener=listener)

    def stop(self) -> None:
        self._running = False

    async def run(self) -> None:
        while self._running:
            batches = await self._consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS_PER_POLL
            )
            for tp, records in batches.items():
                await self._take(tp, records)
                await self.commit([tp])
            if batches:
                self._on_new_work()
            if self._disk.due() or self._replicating:
                # Offsets held by a full disk, or waiting for their jobs' replication: no
                # message may come to commit them.
                await self.commit(self._consumer.assignment())
            self._resume_when_able()

    async def _take(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Handle records in order; stop at the first that must wait, and seek back to it, or
        once the partition is no longer ours (a rebalance while a dead letter was sent)."""
        for record in records:
            if tp not in self._consumer.assignment():
                return  # revoked meanwhile: its next owner reads on from the committed offset
            if self._waits(tp):
                self._consumer.seek(tp, record.offset)  # read again after the wait
                return
            try:
                await self.handle(record)
            except StoreFull as exc:
                self._consumer.seek(tp, record.offset)  # nothing of it was written
                self._hold_for_disk(exc)
                return
            except KafkaError as exc:
                self._hold_dead_letter(tp, record, exc)
                return
            self._processed[tp] = record.offset + 1
            if self._cluster is not None:
                mark = self._store.last_mark_id()
                self._replicating.setdefault(tp, []).append((record.offset + 1, mark))
            self._disk.writable()
            self._unsent.pop(tp, None)

    def _waits(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` must wait (a full disk, its dead letter's next try, too many jobs,
        in cluster mode a partition not restored yet), paused again if need be: a
        rebalance forgets every pause."""
        if self._cluster is not None and not self._cluster.ownership.ready(tp.partition):
            self._pause({tp})
            return True
        if self._disk.held():
            self._pause(self._consumer.assignment())
            return True
        if self._dead_letter_waits(tp):
            self._pause({tp})
            return True
        return self._full()

    def _pause(self, partitions: set[TopicPartition]) -> None:
        unpaused = partitions - self._consumer.paused()
        if unpaused:
            self._consumer.pause(*unpaused)

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

    def _hold_for_disk(self, exc: StoreFull) -> None:
        """Pause every partition (the poll loop keeps running) until the next try."""
        self._consumer.pause(*self._consumer.assignment())
        self._disk.hold(exc)

    def _hold_dead_letter(
        self, tp: TopicPartition, record: ConsumerRecord, exc: KafkaError
    ) -> None:
        """Pause ``tp`` at the message whose dead letter failed, until the next try; nothing
        past it is committed, the other partitions go on."""
        if tp not in self._consumer.assignment():
            return  # revoked during the send: its next owner reads the message again
        self._consumer.seek(tp, record.offset)
        self._pause({tp})
        backoff_s = self._unsent.setdefault(tp, Backoff()).next_try()
        log.error(
            "the dead letter of %s:%d:%d was not sent (%r): partition paused, next try in %.0f s",
            record.topic,
            record.partition,
            record.offset,
            exc,
            backoff_s,
        )

    def _dead_letter_waits(self, tp: TopicPartition) -> bool:
        backoff = self._unsent.get(tp)
        return backoff is not None and backoff.held()

    def _resume_when_able(self) -> None:
        paused = self._consumer.paused()
        if not paused or self._disk.held():
            return
        if self._max_unfinished and self._store.unfinished_jobs() >= self._max_unfinished * 0.9:
            return
        ready = {tp for tp in paused if not self._dead_letter_waits(tp) and self._owned(tp)}
        if ready:
            self._consumer.resume(*ready)
            log.info("resuming intake")

    def forget_uncommitted(self, kept: Collection[int]) -> None:
        """After a rebalance: what was processed on partitions no longer ours is the next
        owner's to commit (it reads those requests again and finds their jobs)."""
        for tp in list(self._replicating):
            if tp.partition not in kept:
                del self._replicating[tp]
        for tp in list(self._processed):
            if tp.partition not in kept:
                self._processed.pop(tp, None)
                self._committed.pop(tp, None)

    def _owned(self, tp: TopicPartition) -> bool:
        return self._cluster is None or self._cluster.ownership.ready(tp.partition)

    def _committable(self, tp: TopicPartition) -> int:
        """The offset that may be committed: every record before it is a job or on the DLQ
        and, in cluster mode, its job is confirmed in the changelog."""
        if self._cluster is None:
            return self._processed.get(tp, -1)
        confirmed = self._cluster.writer.confirmed_mark
        waiting = self._replicating.get(tp, [])
        offset = -1
        while waiting and waiting[0][1] <= confirmed:
            offset = waiting.pop(0)[0]
        if not waiting:
            self._replicating.pop(tp, None)
        return offset

    async def commit(self, partitions: Iterable[TopicPartition]) -> None:
        """Commit what is processed: every record before the offset is a job or on the DLQ
        (in cluster mode: and replicated)."""
        ready = {tp: self._committable(tp) for tp in partitions}
        offsets = {
            tp: offset for tp, offset in ready.items() if offset > self._committed.get(tp, -1)
        }
        if not offsets or not self._synced():
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member; it reads these requests again and
            # finds their jobs already in the store.
            log.warning("offsets %s not committed: %s", offsets, exc)
            return
        self._committed.update(offsets)

    def _synced(self) -> bool:
        """The jobs are on disk before Kafka forgets their requests; False (and intake held)
        when the disk is too full to say so: the offsets wait for the next commit."""
        try:
            self._store.sync()
        except StoreFull as exc:
            self._hold_for_disk(exc)
            return False
        self._disk.writable()
        return True

    async def handle(self, record: ConsumerRecord) -> None:
        """Make ``record`` a job or a dead letter; raises only StoreFull (nothing done)."""
        source = f"{record.topic}:{record.partition}:{record.offset}"
        outcome = self.parse(record.value)
        if isinstance(outcome, Rejection):
            await self._reject(record, source, outcome)
            self._metrics.requests.labels("rejected").inc()
            return
        job_id = outcome.request_id or source
        created = self._store.create_job(
            job_id, outcome, source, plan_phases(outcome.options.phases, self._verify)
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

    def parse(self, value: bytes | None) -> GenerationRequest | Rejection:
        """A request, or why not (on one line, control characters escaped): for any bytes."""
        try:
            outcome = self._parse(value or b"")
        except Exception as exc:  # no message may stop intake, whatever it holds
            log.exception("unexpected error reading a request")
            outcome = Rejection(f"unreadable request ({type(exc).__name__})", None)
        if isinstance(outcome, Rejection):
            return Rejection(_one_line(outcome.error), outcome.request_id)
        return outcome

    def _parse(self, value: bytes) -> GenerationRequest | Rejection:
        if len(value) > self._kafka.max_request_bytes:
            return Rejection(
                f"message of {len(value)} bytes exceeds kafka.max_request_bytes "
                f"({self._kafka.max_request_bytes})",
                _sniff_request_id(value[:4096]),
            )
        try:
            # pydantic's parser bounds nesting depth (RecursionError is impossible) and
            # number size, and refuses invalid UTF-8 and lone surrogates: any failure is a
            # ValueError.
            raw = pydantic_core.from_json(value)
        except ValueError as exc:
            return Rejection(f"not JSON: {exc}", None)
        request_id = _usable_request_id(raw)
        try:
            request = GenerationRequest.model_validate(raw)
        except ValidationError as exc:
            return Rejection(_describe(exc), request_id)
        return self._refusal(request, request_id) or request

    def _refusal(self, request: GenerationRequest, request_id: str | None) -> Rejection | None:
        """A valid request that this daemon still does not take."""
        if request.request_id is not None and is_derived_job_id(request.request_id):
            return Rejection(
                f"request_id {request.request_id!r} has the form topic:partition:offset, "
                "the job id of a request without a request_id; choose another",
                None,  # it may be a real job's id: announce nothing under it
            )
        model = request.options.model
        allowed = self._allowed_models
        if model is not None and allowed is not None and model not in allowed:
            return Rejection(
                f"options.model {model!r} is not allowed; allowed (llm.allowed_models): "
                f"{', '.join(allowed)}",
                request_id,
            )
        mockup = request.mockup
        if isinstance(mockup, ImageMockup) and mockup.size_bytes > self._max_image_bytes:
            return Rejection(
                f"mockup image of {mockup.size_bytes} bytes exceeds llm.max_image_bytes "
                f"({self._max_image_bytes})",
                request_id,
            )
        return None

    async def _reject(self, record: ConsumerRecord, source: str, rejection: Rejection) -> None:
        log.warning(
            "rejected message %s: %s",
            source,
            rejection.error,
            extra={"job_id": rejection.request_id or "-"},
        )
        # The store first: when it is full (StoreFull) nothing is sent yet, and the message
        # is read again later.
        self._announce(rejection)
        await self._dead_letter(record, source, rejection.error)

    def _announce(self, rejection: Rejection) -> None:
        """job.rejected under the request_id the message names, unless a job has that id: a
        message anyone can send must not end (or appear to end) someone else's job; once per
        request_id, so a message read again (its dead letter failed) is not announced twice."""
        request_id = rejection.request_id
        if request_id is None:
            return
        try:
            self._store.job(request_id)
        except JobNotFound:
            if self._store.has_event(request_id, "job.rejected"):
                log.info("%s was rejected before", request_id, extra={"job_id": request_id})
            else:
                self._store.emit(request_id, request_id, JobRejected(error=rejection.error))
            return
        log.warning(
            "a rejected message names the existing job %s: no job.rejected for it",
            request_id,
            extra={"job_id": request_id},
        )

    async def _dead_letter(self, record: ConsumerRecord, source: str, error: str) -> None:
        """Forward the message; when the broker (or the producer's cap) refuses it, forward
        less: its first bytes without its own headers (they may be what is too large), at
        last only our headers, so that every message has its dead letter."""
        ours = [("error", error.encode("utf-8", "replace")), ("source", source.encode())]
        value: bytes | None = record.value
        size = len(value or b"")
        limit = self._kafka.dead_letter_max_bytes
        if value is not None and size > limit:
            value, ours = value[:limit], [*ours, ("truncated", str(size).encode())]
        cut = [*ours[:2], ("truncated", str(size).encode())]
        key = record.key[:MAX_FALLBACK_KEY_BYTES] if record.key else record.key
        attempts = [
            (value, record.key, [*_their_headers(record), *ours]),
            ((record.value or b"")[: limit // 2], key, cut),
            (b"", key, cut),
        ]
        for value, key, headers in attempts:
            try:
                await self._producer.send_and_wait(
                    self._kafka.dead_letter_topic, value, key=key, headers=headers
                )
                return
            except MessageSizeTooLargeError:
                log.warning("the broker refused the dead letter of %s; sending less", source)
        raise MessageSizeTooLargeError(f"the broker refuses even an empty dead letter of {source}")


@dataclass(frozen=True)
class Cluster:
    """What intake works with in cluster mode: the partitions this daemon owns, the writer
    that confirms their records, and whom to tell of a rebalance."""

    ownership: Ownership
    writer: ChangelogWriter
    on_assigned: Callable[[set[int]], None] = lambda partitions: None
    on_revoked: Callable[[set[int]], Awaitable[None]] | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Cluster mode (docs/cluster-design.md section 2.2). Revoked: nothing new starts for
    the partitions, what is replicated is committed. Assigned: partitions kept go on,
    lost ones stop, new ones stay paused while they restore. Called inside the group join
    (on assignment without heartbeats): only decides, never waits for a restore."""

    def __init__(self, intake: Intake, cluster: Cluster) -> None:
        self._intake = intake
        self._cluster = cluster

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._cluster.ownership.suspend({tp.partition for tp in revoked})
        await self._intake.commit(revoked)
        if self._cluster.on_revoked is not None:
            await self._cluster.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        numbers = {tp.partition for tp in assigned}
        self._intake.forget_uncommitted(numbers)
        kept, lost, new = self._cluster.ownership.reassign(numbers)
        log.info(
            "consuming %s (kept %s, restoring %s, lost %s)",
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)),
            sorted(kept),
            sorted(new),
            sorted(lost),
        )
        self._cluster.on_assigned(numbers)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Before partitions move to another member, commit what was processed on them."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._intake.commit(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("consuming %s", ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)))


def _their_headers(record: ConsumerRecord) -> list[tuple[str, bytes]]:
    """The message's own headers; those named like ours are renamed ``original-<name>``."""
    return [
        (f"original-{key}" if key in OUR_HEADERS else key, value)
        for key, value in record.headers or ()
    ]


def _usable_request_id(raw: Any) -> str | None:
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        return None
    return None if is_derived_job_id(request_id) else request_id


def _sniff_request_id(head: bytes) -> str | None:
    match = re.search(rb'"request_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"', head)
    return _usable_request_id({"request_id": match.group(1).decode()}) if match else None


def _describe(exc: ValidationError) -> str:
    return "invalid GenerationRequest: " + "; ".join(field_errors(exc, "request", limit=10))


def _one_line(error: str) -> str:
    shown = printable(error)
    return shown if len(shown) <= MAX_ERROR_CHARS else shown[: MAX_ERROR_CHARS - 1] + "…"
