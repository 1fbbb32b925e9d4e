"""The outbox relay: publishes committed events to the events topic, in order, at least once.

Rows are published oldest first (so in ``seq`` order per job, all keyed by job_id and
thus on one partition), only once they are on disk (one ``Store.sync`` per batch covers
every commit before it), and marked published only after the broker acknowledged them.
An event out in the world is thus never lost to a power cut, nor its ``seq`` reused.
A row that was sent but not marked is sent again after a restart with the same
event_id; subscribers de-duplicate on it.

An event too large for the producer or the broker is made smaller, never dropped: first
without its files' contents, then down to its type's own fields. The smaller form is
stored before it is sent, so a re-publish is identical. Each row is handled on its own: a
refused event holds back only the later events of its own job (they never overtake it),
never those of other jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from daemon import chaos
from daemon.changelog_writer import ChangelogWriter
from daemon.contents import contents_left_out
from daemon.contract import (
    Event,
    JobCompletedEvent,
    JobRejectedEvent,
    JobResumedEvent,
    PhaseCompletedEvent,
    PhaseFailedEvent,
    parse_event,
)
from daemon.errors import StoreFull
from daemon.metrics import Metrics
from daemon.store import OutboxRow, Store

log = logging.getLogger(__name__)
BATCH_ROWS = 500
IDLE_POLL_S = 0.5
RETRY_BACKOFF_MAX_S = 5.0
# An event larger than this, and than any the broker has accepted so far, might be refused:
# it is sent alone for its job (the job's next events wait for its acknowledgement), so
# they cannot overtake it. Smaller ones are pipelined. No broker refuses this little.
ORDERED_ABOVE_BYTES = 256 * 1024
# An event the broker refuses even at its smallest is tried again after this long...
REFUSED_RETRY_S = 5.0
REFUSED_RETRY_MAX_S = 300.0
# ... and the relay failing to publish for this long makes /readyz answer 503.
UNREADY_AFTER_S = 30.0
READINESS_CAUSE = "events"
SIZE_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
NOTE_BYTES = 1000  # an error or reason kept in an event's smallest form is cut to this
SMALLEST_NOTE = "event cut to the fields of its type"


@dataclass
class _Refused:
    """A row the broker refuses even at its smallest: its job waits until ``retry_at``."""

    job_id: str
    size: int
    tries: int
    retry_at: float


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        topic: str,
        max_bytes: int = 16 * 1024**2,
        metrics: Metrics | None = None,
        before_publish: Callable[[], Awaitable[None]] | None = None,
        changelog: ChangelogWriter | None = None,
    ) -> None:
        self._changelog = changelog  # cluster mode: the changelog's records go first
        self._metrics = metrics or Metrics()
        self._before_publish = before_publish
        self._max_bytes = max_bytes
        self._store = store
        self._producer = producer
        self._topic = topic
        self._wake = asyncio.Event()
        self._running = True
        self._largest_acked = ORDERED_ABOVE_BYTES
        self._refused: dict[int, _Refused] = {}  # by outbox row id
        self._failing_since: float | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while self._running:
            try:
                published = await self.publish_batch()
            except StoreFull as exc:
                # Nothing is lost: what was sent is sent again once the store can say so.
                failures += 1
                delay_s = min(RETRY_BACKOFF_MAX_S, 0.2 * 2**failures)
                log.warning("%s; publishing again in %.1f s", exc, delay_s)
                self._note_failure(exc)
                await asyncio.sleep(delay_s)
                continue
            except KafkaError as exc:
                failures += 1
                delay_s = min(RETRY_BACKOFF_MAX_S, 0.2 * 2**failures)
                log.warning(
                    "publishing events failed (%s); %d waiting, retry in %.1f s",
                    exc,
                    self._store.outbox_backlog(),
                    delay_s,
                )
                self._note_failure(exc)
                await asyncio.sleep(delay_s)
                continue
            failures = 0
            self._note_success()
            if not published:
                await self._idle()

    async def _idle(self) -> None:
        # Other processes (codegend resume, cancel) also write the outbox: poll as well as wait.
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def publish_batch(self) -> int:
        """Publish what is committed (but the jobs waiting behind a refused event); returns
        how many rows moved on (published, or made smaller to be sent again at once), and
        in cluster mode how many changelog records went out before them."""
        writer = self._changelog
        rows = self._store.unpublished(
            BATCH_ROWS,
            skip_jobs=self._waiting_jobs(),
            partitions=writer.owned_partitions() if writer else None,
        )
        replicated = 0
        if writer is not None:
            # Read after the rows: the keys their transactions marked are all sent, and
            # confirmed, before any of them (a failure raises and holds them all).
            replicated = await writer.send_marked()
            rows = [row for row in rows if writer.publishable(row.partition)]
        if not rows:
            return replicated
        if self._before_publish is not None:
            await self._before_publish()  # e.g. the files of these phases are written out
        if rows[-1].id > self._store.synced_outbox_id:
            self._store.sync(force=True)
        sent, error = await self._send_all(rows)
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        acked: list[OutboxRow] = []
        shrunk = 0
        held: set[str] = set()  # jobs with a row not acknowledged: none of their later rows is
        for row, result in zip((row for row, _ in sent), results, strict=True):
            if row.job_id in held:
                continue  # sent again after the row before it, so never marked ahead of it
            if isinstance(result, SIZE_REFUSALS):
                shrunk += self._on_broker_refusal(row)
                held.add(row.job_id)
            elif isinstance(result, BaseException):
                error = error or result
                held.add(row.job_id)
            else:
                acked.append(row)
        self._acknowledged(acked)
        if error is not None:
            raise error
        return len(acked) + shrunk + replicated

    async def _send_all(
        self, rows: list[OutboxRow]
    ) -> tuple[list[tuple[OutboxRow, asyncio.Future[object]]], BaseException | None]:
        """Hand each row to the producer, in order, but none after one of its own job that
        may be refused; stops at a failure that is not about size (returned)."""
        sent: list[tuple[OutboxRow, asyncio.Future[object]]] = []
        held: set[str] = set()
        for row in rows:
            if row.job_id in held:
                continue
            try:
                sending = await self._send_fitting(row)
            except KafkaError as exc:
                return sent, exc
            if sending is None:  # refused by the producer even at its smallest
                held.add(row.job_id)
                continue
            fitted, future = sending
            sent.append((fitted, future))
            if len(fitted.payload) > self._largest_acked:
                held.add(row.job_id)  # its next events wait for this one's acknowledgement
        return sent, None

    async def _send_fitting(
        self, row: OutboxRow
    ) -> tuple[OutboxRow, asyncio.Future[object]] | None:
        """Send the row, smaller if it is over ``max_bytes`` or the producer refuses it
        (its limit counts the record's overhead too); None if even the smallest is refused."""
        while len(row.payload) > self._max_bytes:
            smaller = self._smaller(row, f"more than kafka.max_publish_bytes = {self._max_bytes}")
            if smaller is None:
                break
            row = smaller
        while True:
            try:
                return row, await self._send(row)
            except SIZE_REFUSALS as exc:
                smaller = self._smaller(row, "refused by the producer as too large")
                if smaller is None:
                    self._refuse(row, exc)
                    return None
                row = smaller

    async def _send(self, row: OutboxRow) -> asyncio.Future[object]:
        headers = [("type", row.type.encode())]
        if self._changelog is not None:
            headers += self._changelog.owner_header(row.partition)
        delivery: asyncio.Future[object] = await self._producer.send(
            self._topic, value=row.payload, key=row.job_id.encode(), headers=headers
        )
        return delivery

    def _on_broker_refusal(self, row: OutboxRow) -> int:
        """The broker refused the row as too large: store a smaller form (sent in the next
        batch, its job's later events still behind it). 1 if it was made smaller."""
        smaller = self._smaller(row, "refused by the broker as too large (max.message.bytes)")
        if smaller is None:
            self._refuse(row, MessageSizeTooLargeError())
            return 0
        return 1

    def _acknowledged(self, rows: list[OutboxRow]) -> None:
        if not rows:
            return
        chaos.point("after_publish")  # acknowledged, not yet marked: sent again after a crash
        self._store.mark_published(row.id for row in rows)
        self._metrics.events_published.inc(len(rows))
        self._largest_acked = max(self._largest_acked, *(len(row.payload) for row in rows))
        for row in rows:
            if self._refused.pop(row.id, None) is not None:
                log.info("the refused event was published at last", extra={"job_id": row.job_id})
        self._update_readiness()

    # -- events too large

    def _smaller(self, row: OutboxRow, why: str) -> OutboxRow | None:
        """The row's next smaller form, stored so a re-publish is identical: without file
        contents, else down to the fields of its type. None when it cannot get smaller."""
        event = parse_event(row.payload)
        was = f"the event was {len(row.payload)} bytes, {why}"
        export = f"`codegend export {event.job_id} DIR` writes the files"
        forms = ((note, smaller.to_json()) for note, smaller in _smaller_forms(event, was, export))
        found = next(((n, p) for n, p in forms if len(p) < len(row.payload)), None)
        if found is None:
            return None
        note, payload = found
        self._store.replace_payload(row.id, payload)
        log.warning("%s", note, extra={"job_id": event.job_id})
        return replace(row, payload=payload)

    def _refuse(self, row: OutboxRow, exc: BaseException) -> None:
        """Even the smallest form is refused: the job's events wait, retried with backoff;
        other jobs' events go on."""
        refused = self._refused.get(row.id)
        tries = refused.tries + 1 if refused else 1
        delay_s = min(REFUSED_RETRY_MAX_S, REFUSED_RETRY_S * 2 ** (tries - 1))
        self._refused[row.id] = _Refused(
            row.job_id, len(row.payload), tries, time.monotonic() + delay_s
        )
        log.error(
            "an event of %d bytes is refused as too large even at its smallest (%s); this "
            "job's events wait, retry in %.0f s: raise the events topic's max.message.bytes "
            "(or kafka.max_publish_bytes)",
            len(row.payload),
            type(exc).__name__,
            delay_s,
            extra={"job_id": row.job_id},
        )
        self._update_readiness()

    def _waiting_jobs(self) -> Iterable[str]:
        now = time.monotonic()
        return {r.job_id for r in self._refused.values() if r.retry_at > now}

    # -- readiness

    def _note_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= UNREADY_AFTER_S:
            self._metrics.readiness.set(
                READINESS_CAUSE,
                f"events: not published for {now - self._failing_since:.0f} s ({exc})",
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            self._failing_since = None
            self._update_readiness()

    def _update_readiness(self) -> None:
        if self._refused:
            jobs = sorted({r.job_id for r in self._refused.values()})
            self._metrics.readiness.set(
                READINESS_CAUSE,
                f"events: {len(self._refused)} event(s) refused as too large even at their "
                f"smallest; the events of {', '.join(jobs[:5])} wait",
            )
        elif self._failing_since is None:
            self._metrics.readiness.clear(READINESS_CAUSE)

    async def flush(self, timeout_s: float) -> None:
        """Publish what is left, giving up after ``timeout_s`` (the rows stay for the next start)."""
        with contextlib.suppress(TimeoutError, KafkaError):
            async with asyncio.timeout(timeout_s):
                while await self.publish_batch():
                    pass


def _smaller_forms(event: Event, was: str, export: str) -> Iterator[tuple[str, Event]]:
    """The event without its files' contents, then cut to its type's own fields; each
    with the note that says so."""
    if isinstance(event, PhaseCompletedEvent) and any(f.content for f in event.files):
        yield contents_left_out(event, was, export)
    if not _is_smallest(event):
        note = f"{SMALLEST_NOTE}: {was}; {export}"
        yield note, _smallest(event, note)


def _is_smallest(event: Event) -> bool:
    if not isinstance(event, PhaseCompletedEvent | JobCompletedEvent) or not event.warnings:
        return False
    return event.warnings[-1].startswith(SMALLEST_NOTE)


def _smallest(event: Event, note: str) -> Event:
    """The event with only its type's own fields: no files, no plan, no list of remaining
    problems, one warning (the note), its error or reason cut to NOTE_BYTES characters."""
    update: dict[str, object] = {}
    if isinstance(event, PhaseCompletedEvent):
        update["files"] = []
        update["plan"] = None  # the store keeps it (codegend status, resumes)
    if isinstance(event, PhaseCompletedEvent | JobCompletedEvent):
        update["warnings"] = [note]
        if event.verification is not None and event.verification.remaining:
            update["verification"] = event.verification.model_copy(update={"remaining": []})
    if isinstance(event, JobRejectedEvent | PhaseFailedEvent) and len(event.error) > NOTE_BYTES:
        update["error"] = event.error[:NOTE_BYTES]
    if isinstance(event, JobResumedEvent) and len(event.reason) > NOTE_BYTES:
        update["reason"] = event.reason[:NOTE_BYTES]
    return event.model_copy(update=update)
