"""The outbox: every event is written in the transaction of the change it announces, with
the job's next ``seq``; the relay publishes the rows and marks them published."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from daemon.contract import Event, EventBody, PhaseCompletedEvent, event_of, utc_now
from daemon.store.base import StoreBase, _marks

# The suffix of a job's state key: the key is the bare job id (see key_of).
STATE = ""
MARK = (
    'INSERT OR REPLACE INTO changelog_marks (key, "partition") '
    'SELECT ?, "partition" FROM jobs WHERE job_id = ?'
)
MAX_MARK_ID = 2**63 - 1  # SQLite's largest integer


def key_of(job_id: str, suffix: str) -> str:
    """The changelog key of a job's part: ``job_id`` for its state, else ``job_id/suffix``."""
    return f"{job_id}/{suffix}" if suffix else job_id


@dataclass(frozen=True)
class Mark:
    id: int
    key: str
    partition: int


@dataclass(frozen=True)
class OutboxRow:
    id: int
    job_id: str
    type: str
    payload: bytes
    partition: int | None = None  # the job's requests partition; None: no job (a rejection)


class Events(StoreBase):
    """Appending events to the outbox and reading them back for the relay."""

    def _mark(self, job_id: str, *suffixes: str) -> None:
        """Mark the changelog keys of the job's parts ``suffixes`` (STATE, ``request``,
        ``file/PATH``, ...) as changed, in the job's partition: a re-marked key moves to the
        end. Call inside the transaction of the change; nothing when the changelog is off."""
        if self.changelog:
            self.db.conn.executemany(
                MARK, [(key_of(job_id, suffix), job_id) for suffix in suffixes]
            )

    def marks(
        self,
        limit: int = 10_000,
        up_to: int | None = None,
        partitions: Collection[int] | None = None,
        after: int = 0,
    ) -> list[Mark]:
        """The marked keys, in mark order, of id above ``after``; only those of id ``up_to``
        at most, and of the requests ``partitions``, if given."""
        where, args = "", tuple[int, ...]()
        if partitions is not None:
            owned = tuple(partitions)
            where, args = f' AND "partition" IN ({_marks(owned)})', owned
        rows = self.db.conn.execute(
            'SELECT id, key, "partition" FROM changelog_marks WHERE id > ? AND id <= ?'
            f"{where} ORDER BY id LIMIT ?",
            (after, MAX_MARK_ID if up_to is None else up_to, *args, limit),
        ).fetchall()
        return [Mark(*row) for row in rows]

    def last_mark_id(self) -> int:
        """The highest mark id so far, 0 when there is no mark."""
        row = self.db.conn.execute("SELECT max(id) FROM changelog_marks").fetchone()
        return int(row[0] or 0)

    def delete_marks(self, marks: Iterable[Mark]) -> None:
        """Delete the marks as they were: a key marked again since has a new id and stays."""
        with self.transaction():
            self.db.conn.executemany(
                "DELETE FROM changelog_marks WHERE key = ? AND id = ?",
                [(mark.key, mark.id) for mark in marks],
            )

    def _emit(self, job_id: str, request_id: str | None, body: EventBody) -> Event:
        """Append the event that says ``body`` to the outbox, with the job's next seq; call
        inside a transaction."""
        row = self.db.conn.execute(
            "INSERT INTO sequences (job_id, last_seq) VALUES (?, 1) "
            "ON CONFLICT(job_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
            (job_id,),
        ).fetchone()
        event = event_of(
            body,
            event_id=uuid.uuid4().hex,
            job_id=job_id,
            request_id=request_id,
            seq=row[0],
            ts=utc_now(),
        )
        self.db.conn.execute(
            "INSERT INTO outbox (event_id, job_id, seq, type, payload, created_at) VALUES (?,?,?,?,?,?)",
            (event.event_id, job_id, event.seq, event.type, event.to_json(), time.time()),
        )
        self._mark(job_id, STATE, f"event/{event.seq}")
        return event

    def last_seq(self, job_id: str) -> int:
        row = self.db.conn.execute(
            "SELECT last_seq FROM sequences WHERE job_id = ?", (job_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _raise_seq(self, job_id: str, seq: int) -> None:
        """The job's seq counter at ``seq`` at least (it never goes back)."""
        self.db.conn.execute(
            "INSERT INTO sequences (job_id, last_seq) VALUES (?, ?) "
            "ON CONFLICT(job_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            (job_id, seq),
        )

    def emit(self, job_id: str, request_id: str | None, body: EventBody) -> Event:
        with self.transaction():
            return self._emit(job_id, request_id, body)

    def has_event(self, job_id: str, event_type: str) -> bool:
        """Whether the outbox holds an event of ``event_type`` for ``job_id`` (published or not)."""
        row = self.db.conn.execute(
            "SELECT 1 FROM outbox WHERE job_id = ? AND type = ? LIMIT 1", (job_id, event_type)
        ).fetchone()
        return row is not None

    def unpublished(
        self,
        limit: int,
        skip_jobs: Iterable[str] = (),
        partitions: Collection[int] | None = None,
    ) -> list[OutboxRow]:
        """The oldest unpublished rows, but none of the jobs in ``skip_jobs`` (whose events
        wait behind one the broker refused); with ``partitions``, only the rows of jobs of
        those requests partitions and those of no job (rejections)."""
        skipped = list(skip_jobs)
        where = f"o.published_at IS NULL AND o.job_id NOT IN ({_marks(skipped)})"
        args: list[object] = [*skipped]
        if partitions is not None:
            owned = list(partitions)
            where += f' AND (j.job_id IS NULL OR j."partition" IN ({_marks(owned)}))'
            args += owned
        rows = self.db.conn.execute(
            'SELECT o.id, o.job_id, o.type, o.payload, j."partition" FROM outbox o '
            f"LEFT JOIN jobs j ON j.job_id = o.job_id WHERE {where} ORDER BY o.id LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def unpublished_completions(self) -> Iterator[PhaseCompletedEvent]:
        """The committed phase.completed events not published yet, oldest first."""
        cursor = self.db.conn.execute(
            "SELECT payload FROM outbox WHERE published_at IS NULL AND type = ? ORDER BY id",
            ("phase.completed",),
        )
        for (payload,) in cursor.fetchall():
            yield PhaseCompletedEvent.model_validate_json(payload)

    def mark_published(self, ids: Iterable[int]) -> None:
        now = time.time()
        with self.transaction():
            for row_id in ids:
                self._mark_event(
                    "UPDATE outbox SET published_at = ? WHERE id = ? RETURNING job_id, seq",
                    (now, row_id),
                )

    def replace_payload(self, row_id: int, payload: bytes) -> None:
        with self.transaction():
            self._mark_event(
                "UPDATE outbox SET payload = ? WHERE id = ? RETURNING job_id, seq",
                (payload, row_id),
            )

    def _mark_event(self, update: str, args: tuple[object, ...]) -> None:
        """Run ``update`` of one outbox row (it returns the row's job_id and seq) and mark
        the row's event key."""
        row = self.db.conn.execute(update, args).fetchone()
        if row is not None:
            self._mark(row[0], f"event/{row[1]}")

    def outbox_backlog(self) -> int:
        return int(
            self.db.conn.execute(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            ).fetchone()[0]
        )
