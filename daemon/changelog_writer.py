"""The changelog writer: sends the records of the marked keys to the changelog topic, for
the relay, before it publishes the events committed with them (docs/cluster-design.md
section 1.3). A record is built when it is sent, from the current rows, so a key marked
many times between two passes goes out once, with its latest value."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon import changelog
from daemon.store import Store
from daemon.store.events import Mark

MARKS_PER_SEND = 500
# Every record carries its owner's fence (section 3.1). Until ownership gives each
# partition its claim, the only writer is the daemon alone in its group: fence 0.
PLACEHOLDER_FENCE = 0

# Section 1.3 step 3: given the acknowledgements of a pass's records, returns once the
# partitions' tail readers have read past them with no newer claim before them.
Confirm = Callable[[Sequence[object]], Awaitable[None]]


class ChangelogWriter:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        topic: str,
        confirm: Confirm | None = None,
    ) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
        self._confirm = confirm

    async def send_marked(self) -> int:
        """Send the records of every key marked so far (those of the transactions of any
        event read before are among them) and delete the marks acknowledged; returns how
        many were. Raises the first failure once every record handed over is settled: the
        marks not acknowledged stay and are sent at the next pass."""
        last_mark = self._store.last_mark_id()
        sent: list[object] = []
        while marks := self._store.marks(MARKS_PER_SEND, up_to=last_mark):
            if not sent:
                # Nothing leaves the process before it is on disk (other processes' commits too).
                self._store.sync(force=True)
            sent += await self._send(marks)
        if sent and self._confirm is not None:
            await self._confirm(sent)
        return len(sent)

    async def _send(self, marks: list[Mark]) -> list[object]:
        """Hand the marks' records to the producer in mark order (stopping at a send that
        fails), wait for them all, delete the acknowledged marks; their acknowledgements."""
        handed: list[tuple[Mark, asyncio.Future[object]]] = []
        error: BaseException | None = None
        for mark in marks:
            try:
                handed.append((mark, await self._send_record(mark)))
            except KafkaError as exc:
                error = exc
                break
        results = await asyncio.gather(*(future for _, future in handed), return_exceptions=True)
        acked = [
            (mark, result)
            for (mark, _), result in zip(handed, results, strict=True)
            if not isinstance(result, BaseException)
        ]
        self._store.delete_marks(mark for mark, _ in acked)
        error = error or next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error
        return [result for _, result in acked]

    async def _send_record(self, mark: Mark) -> asyncio.Future[object]:
        # The job's request partition, never the partitioner's: the key only names the
        # record for compaction (section 1.2). A None value is a tombstone.
        delivery: asyncio.Future[object] = await self._producer.send(
            self._topic,
            value=changelog.build(self._store, mark.key),
            key=mark.key.encode(),
            partition=mark.partition,
            headers=[("fence", str(PLACEHOLDER_FENCE).encode())],
        )
        return delivery
