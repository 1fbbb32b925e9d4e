"""Retention: deleting finished jobs and published events older than a cutoff, in batches,
keeping what a redelivered request or the relay still needs."""

from __future__ import annotations

import time
from dataclasses import dataclass

from daemon.store.base import _marks
from daemon.store.events import STATE, Events
from daemon.store.moves import TERMINAL_NAMES

NOT_NEWEST = "id < (SELECT max(id) FROM outbox)"
PRUNABLE_EVENT = f"published_at IS NOT NULL AND published_at < ? AND {NOT_NEWEST}"
PRUNABLE_JOB = (
    f"state IN ({_marks(TERMINAL_NAMES)}) AND updated_at < ? AND NOT EXISTS "
    "(SELECT 1 FROM outbox WHERE outbox.job_id = jobs.job_id AND published_at IS NULL)"
)


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or, dry, would remove)."""

    jobs: int = 0
    events: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.jobs + other.jobs, self.events + other.events)


class Retention(Events):
    """Pruning what is old and done."""

    def prunable(self, before: float) -> Pruned:
        """What ``prune_jobs`` and ``prune_events`` would remove for this cutoff (a
        ``time.time()``), without removing it."""
        jobs = self.db.conn.execute(
            f"SELECT count(*) FROM jobs WHERE {PRUNABLE_JOB}", (*TERMINAL_NAMES, before)
        ).fetchone()[0]
        events = self.db.conn.execute(
            f"SELECT count(*) FROM outbox WHERE {PRUNABLE_EVENT} OR (published_at IS NOT NULL "
            f"AND {NOT_NEWEST} AND job_id IN (SELECT job_id FROM jobs WHERE {PRUNABLE_JOB}))",
            (before, *TERMINAL_NAMES, before),
        ).fetchone()[0]
        return Pruned(jobs=jobs, events=events)

    def prune_jobs(self, before: float, limit: int) -> Pruned:
        """Delete up to ``limit`` finished jobs last changed before ``before``, with their
        phases, files, calls and events, in one transaction; returns the jobs and events
        deleted. A job with an event not yet published stays. Its id stays in pruned_jobs,
        so a redelivered request makes no second job, and its seq counter stays."""
        with self.transaction():
            ids = [
                row[0]
                for row in self.db.conn.execute(
                    f"SELECT job_id FROM jobs WHERE {PRUNABLE_JOB} ORDER BY updated_at LIMIT ?",
                    (*TERMINAL_NAMES, before, limit),
                )
            ]
            if not ids:
                return Pruned()
            for job_id in ids:
                self._mark_every_key(job_id)
            events = self._delete_jobs(ids)
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO pruned_jobs (job_id, pruned_at) VALUES (?, ?)",
                [(job_id, time.time()) for job_id in ids],
            )
        return Pruned(jobs=len(ids), events=events)

    def import_pruned(self, job_id: str, pruned_at: float, last_seq: int) -> None:
        """The changelog says the job was pruned: delete what is left of it here and keep
        its id and its seq counter, as :meth:`prune_jobs` does."""
        with self.transaction():
            self._delete_jobs([job_id])
            self.db.conn.execute(
                "INSERT OR REPLACE INTO pruned_jobs (job_id, pruned_at) VALUES (?, ?)",
                (job_id, pruned_at),
            )
            self._raise_seq(job_id, last_seq)

    def _delete_jobs(self, ids: list[str]) -> int:
        """Delete the jobs with their phases, files, calls and events (but the newest
        outbox row); returns the events deleted."""
        marks = _marks(ids)
        for table in ("calls", "files", "phases"):
            self.db.conn.execute(f"DELETE FROM {table} WHERE job_id IN ({marks})", ids)
        events = self.db.conn.execute(
            f"DELETE FROM outbox WHERE job_id IN ({marks}) AND {NOT_NEWEST}", ids
        ).rowcount
        self.db.conn.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", ids)
        return int(events)

    def _mark_every_key(self, job_id: str) -> None:
        """Mark every key of a job about to be deleted (its records become tombstones, its
        state key the pruned marker)."""
        if not self.changelog:
            return
        conn = self.db.conn
        phases = conn.execute("SELECT phase FROM phases WHERE job_id = ?", (job_id,))
        files = conn.execute("SELECT path FROM files WHERE job_id = ?", (job_id,))
        events = conn.execute("SELECT seq FROM outbox WHERE job_id = ?", (job_id,))
        self._mark(
            job_id,
            "request",
            "plan",
            *(f"phase/{name}" for (name,) in phases.fetchall()),
            *(f"file/{path}" for (path,) in files.fetchall()),
            *(f"event/{seq}" for (seq,) in events.fetchall()),
            STATE,
        )

    def prune_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` outbox rows published before ``before``, in one
        transaction; returns how many. Unpublished rows stay, and so does the newest row,
        so row ids never restart (the relay's sync point counts on them growing)."""
        with self.transaction():
            cursor = self.db.conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE "
                f"{PRUNABLE_EVENT} ORDER BY published_at LIMIT ?)",
                (before, limit),
            )
        return cursor.rowcount
