"""The outbox relay: publishes committed events to the events topic, in order, at least once.

Rows are published oldest first (so in ``seq`` order per job, all keyed by job_id and
thus on one partition), only once they are on disk (one ``Store.sync`` per batch covers
every commit before it), and marked published only after the broker acknowledged them.
An event out in the world is thus never lost to a power cut, nor its ``seq`` reused.
A row that was sent but not marked is sent again after a restart with the same
event_id; subscribers de-duplicate on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from daemon import chaos
from daemon.metrics import Metrics
from daemon.models import Event
from daemon.store import OutboxRow, Store

log = logging.getLogger(__name__)
BATCH_ROWS = 500
IDLE_POLL_S = 0.5
RETRY_BACKOFF_MAX_S = 5.0


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        topic: str,
        max_bytes: int = 16 * 1024**2,
        metrics: Metrics | None = None,
        before_publish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._before_publish = before_publish
        self._max_bytes = max_bytes
        self._store = store
        self._producer = producer
        self._topic = topic
        self._wake = asyncio.Event()
        self._running = True

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
            except MessageSizeTooLargeError as exc:
                failures += 1
                log.error(
                    "the broker refused an event as too large (%s): set kafka.max_publish_bytes "
                    "to at most the broker's message.max.bytes; retrying",
                    exc,
                )
                await asyncio.sleep(min(RETRY_BACKOFF_MAX_S, 0.2 * 2**failures))
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
                await asyncio.sleep(delay_s)
                continue
            failures = 0
            if not published:
                await self._idle()

    async def _idle(self) -> None:
        # Other processes (codegend resume, cancel) also write the outbox: poll as well as wait.
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def publish_batch(self) -> int:
        rows = self._store.unpublished(BATCH_ROWS)
        if not rows:
            return 0
        if self._before_publish is not None:
            await self._before_publish()  # e.g. the files of these phases are written out
        if rows[-1].id > self._store.synced_outbox_id:
            self._store.sync(force=True)
        pending = [await self._send(row) for row in rows]
        await asyncio.gather(*pending)
        chaos.point("after_publish")  # acknowledged, not yet marked: sent again after a crash
        self._store.mark_published(row.id for row in rows)
        self._metrics.events_published.inc(len(rows))
        return len(rows)

    async def _send(self, row: OutboxRow) -> asyncio.Future[object]:
        if len(row.payload) > self._max_bytes:
            row = self._shrink(row)
        return await self._producer.send(
            self._topic,
            value=row.payload,
            key=row.job_id.encode(),
            headers=[("type", row.type.encode())],
        )

    def _shrink(self, row: OutboxRow) -> OutboxRow:
        """An event too large to publish goes out without file contents (a warning says
        so; `codegend export` has them), stored that way so a re-publish is identical."""
        event = Event.model_validate_json(row.payload)
        files = [f.model_copy(update={"content": ""}) for f in event.files or []]
        note = (
            f"file contents left out: the event was {len(row.payload)} bytes, more than "
            f"kafka.max_publish_bytes = {self._max_bytes}; `codegend export {event.job_id} DIR` "
            "writes the files"
        )
        smaller = event.model_copy(
            update={"files": files, "warnings": [*(event.warnings or []), note]}
        )
        payload = smaller.to_json()
        self._store.replace_payload(row.id, payload)
        log.warning("%s", note, extra={"job_id": event.job_id})
        return replace(row, payload=payload)

    async def flush(self, timeout_s: float) -> None:
        """Publish what is left, giving up after ``timeout_s`` (the rows stay for the next start)."""
        with contextlib.suppress(TimeoutError, KafkaError):
            async with asyncio.timeout(timeout_s):
                while await self.publish_batch():
                    pass
