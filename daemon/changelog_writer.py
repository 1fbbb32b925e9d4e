"""The changelog writer: sends the records of the marked keys to the changelog topic, for
the relay, before it publishes the events committed with them (docs/cluster-design.md
section 1.3). A record is built when it is sent, from the current rows, so a key marked
many times between two passes goes out once, with its latest value.

Only the keys of partitions this daemon owns are sent, each record with the fence of the
partition's claim; a record counts once the partition's tail reader has read it back with
no newer claim before it (section 3.2). Until then the partition's events wait, and so do
the offsets of the requests whose jobs the records hold."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon import changelog
from daemon.claims import fence_header
from daemon.store import Store
from daemon.store.events import Mark

MARKS_PER_SEND = 500


class Tenures(Protocol):
    """Which partitions this daemon owns, with which fence, and whether what it wrote to
    them is confirmed (daemon.ownership)."""

    def owned_partitions(self) -> Collection[int] | None:
        """The partitions whose records and events may go out; None: every partition."""

    def fence(self, partition: int) -> int | None:
        """The fence of the partition's claim; None once it is not owned."""

    async def confirm(self, offsets: Mapping[int, int]) -> set[int]:
        """Wait until each partition's records up to its offset are read back; the
        partitions whose records are confirmed (the others were lost meanwhile)."""


class SoleOwner:
    """A daemon alone with its changelog (the writer on its own, in tests): every
    partition is its own, with fence 0, and what the broker acknowledged is confirmed."""

    def owned_partitions(self) -> Collection[int] | None:
        return None

    def fence(self, partition: int) -> int | None:
        return 0

    async def confirm(self, offsets: Mapping[int, int]) -> set[int]:
        return set(offsets)


class ChangelogWriter:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        topic: str,
        tenures: Tenures | None = None,
    ) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
        self._tenures: Tenures = tenures or SoleOwner()
        # Per partition, the highest offset acknowledged and not yet confirmed.
        self._unconfirmed: dict[int, int] = {}
        # Every mark of id up to this one, of a partition still ready, is confirmed.
        self.confirmed_mark = 0

    def owned_partitions(self) -> Collection[int] | None:
        return self._tenures.owned_partitions()

    def owner_header(self, partition: int | None) -> list[tuple[str, bytes]]:
        """The ``owner`` header of an event of the partition's jobs: the store and fence
        that published it (diagnostics; not part of the event)."""
        fence = None if partition is None else self._tenures.fence(partition)
        if fence is None:
            return []
        return [("owner", f"{self._store.store_id()}/{fence}".encode())]

    def publishable(self, partition: int | None) -> bool:
        """Whether the events of the partition's jobs may be published now: it is owned
        and its records are confirmed (None: an event of no job, a rejection)."""
        if partition is None:
            return True
        ready = self._tenures.owned_partitions()
        return (ready is None or partition in ready) and partition not in self._unconfirmed

    async def send_marked(self) -> int:
        """Send the records of every key marked so far in the partitions ready (those of
        the transactions of any event read before are among them), delete the marks
        acknowledged, and wait for their confirmation; returns how many records went out.
        Raises the first failure once every record handed over is settled: the marks not
        acknowledged stay and are sent at the next pass."""
        ready = self._tenures.owned_partitions()
        last_mark = self._store.last_mark_id()
        sent = 0
        after = 0
        while marks := self._store.marks(
            MARKS_PER_SEND, up_to=last_mark, partitions=ready, after=after
        ):
            if not sent:
                # Nothing leaves the process before it is on disk (other processes' commits too).
                self._store.sync(force=True)
            sent += await self._send(marks)
            after = marks[-1].id
        await self._confirm()
        if not self._unconfirmed:
            self.confirmed_mark = max(self.confirmed_mark, last_mark)
        return sent

    async def _confirm(self) -> None:
        ready = self._tenures.owned_partitions()
        if ready is not None:  # a partition lost meanwhile: its records no longer matter here
            for partition in set(self._unconfirmed) - set(ready):
                del self._unconfirmed[partition]
        if not self._unconfirmed:
            return
        confirmed = await self._tenures.confirm(dict(self._unconfirmed))
        for partition in confirmed:
            self._unconfirmed.pop(partition, None)

    async def _send(self, marks: list[Mark]) -> int:
        """Hand the marks' records to the producer in mark order (stopping at a send that
        fails), wait for them all, delete the acknowledged marks; how many were."""
        handed: list[tuple[Mark, asyncio.Future[object]]] = []
        error: BaseException | None = None
        for mark in marks:
            fence = self._tenures.fence(mark.partition)
            if fence is None:
                continue  # lost since the pass began: the mark stays, for no one here
            try:
                handed.append((mark, await self._send_record(mark, fence)))
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
        for mark, metadata in acked:
            offset = int(getattr(metadata, "offset", -1))
            self._unconfirmed[mark.partition] = max(
                offset, self._unconfirmed.get(mark.partition, -1)
            )
        error = error or next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error
        return len(acked)

    async def _send_record(self, mark: Mark, fence: int) -> asyncio.Future[object]:
        # The job's request partition, never the partitioner's: the key only names the
        # record for compaction (section 1.2). A None value is a tombstone. A partition's
        # ``~commands/P`` mark is its ``~commands`` record.
        delivery: asyncio.Future[object] = await self._producer.send(
            self._topic,
            value=changelog.build(self._store, mark.key),
            key=changelog.record_key(mark.key).encode(),
            partition=mark.partition,
            headers=fence_header(fence),
        )
        return delivery
