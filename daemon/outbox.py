"""The outbox relay: publishes committed events to the events topic, in order, at least once.

Rows are published oldest first (so in ``seq`` order per job, all keyed by job_id and
thus on one partition), and marked published only after the broker acknowledged them.
A row that was sent but not marked is sent again after a restart with the same
event_id; subscribers de-duplicate on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon.store import OutboxRow, Store

log = logging.getLogger(__name__)
BATCH_ROWS = 500
IDLE_POLL_S = 0.5
RETRY_BACKOFF_MAX_S = 5.0


class OutboxRelay:
    def __init__(self, store: Store, producer: AIOKafkaProducer, topic: str) -> None:
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
        pending = [await self._send(row) for row in rows]
        await asyncio.gather(*pending)
        self._store.mark_published(row.id for row in rows)
        return len(rows)

    async def _send(self, row: OutboxRow) -> asyncio.Future[object]:
        return await self._producer.send(
            self._topic,
            value=row.payload,
            key=row.job_id.encode(),
            headers=[("type", row.type.encode())],
        )

    async def flush(self, timeout_s: float) -> None:
        """Publish what is left, giving up after ``timeout_s`` (the rows stay for the next start)."""
        with contextlib.suppress(TimeoutError, KafkaError):
            async with asyncio.timeout(timeout_s):
                while await self.publish_batch():
                    pass
