"""The rows the changelog's records are built from, and the writes that put records back
into a store (daemon.changelog shapes the records; this layer only reads and writes rows).
Imports mark nothing: what they write comes from the changelog."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from daemon.store.base import _marks
from daemon.store.moves import Moves
from daemon.store.schema import USAGE_COLUMNS

JOB_STATE = (
    "request_id",
    "project_name",
    "partition",
    "state",
    "planned",
    "cancel_requested",
    "not_before",
    "held",
    "created_at",
    "updated_at",
)
PHASE_STATE = (
    "status",
    "attempts",
    "interruptions",
    "deaths_in_a_row",
    "death_call",
    "death_stage",
    "death_chars",
    "death_files",
)
PHASE_RESULT = (*USAGE_COLUMNS, "started_at", "finished_at", "duration_s", "error", "warnings")
FILE = ("phase", "sha256", "size", "content", "committed_at")
# The phase whose record carries the job's verification (jobs.verification).
VERIFYING_PHASE = "VERIFY"

Row = dict[str, Any]


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


class Replica(Moves):
    """Reading a job's parts as rows, and writing them back."""

    def _row(
        self, names: tuple[str, ...], table: str, where: str, args: tuple[object, ...]
    ) -> Row | None:
        cursor = self.db.conn.execute(f"SELECT {_columns(names)} FROM {table} WHERE {where}", args)
        found = cursor.fetchone()
        return dict(zip(names, found, strict=True)) if found else None

    def job_state_row(self, job_id: str) -> Row | None:
        """The job's row as the state record holds it, with ``last_seq`` and ``phases``
        (each phase's state columns, in planned order)."""
        row = self._row(JOB_STATE, "jobs", "job_id = ?", (job_id,))
        if row is None:
            return None
        row["last_seq"] = self.last_seq(job_id)
        phases = self.db.conn.execute(
            f"SELECT phase, {_columns(PHASE_STATE)} FROM phases WHERE job_id = ?", (job_id,)
        ).fetchall()
        row["phases"] = {r[0]: dict(zip(PHASE_STATE, r[1:], strict=True)) for r in phases}
        return row

    def request_row(self, job_id: str) -> Row | None:
        return self._row(("request", "source", "created_at"), "jobs", "job_id = ?", (job_id,))

    def plan_json(self, job_id: str) -> str | None:
        row = self.db.conn.execute("SELECT plan FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def phase_row(self, job_id: str, phase: str) -> Row | None:
        """The phase's result columns (and status and attempts), with the job's
        verification for the verifying phase."""
        names = ("status", "attempts", *PHASE_RESULT)
        row = self._row(names, "phases", "job_id = ? AND phase = ?", (job_id, phase))
        if row is not None and phase == VERIFYING_PHASE:
            found = self._row(("verification",), "jobs", "job_id = ?", (job_id,))
            row["verification"] = found["verification"] if found else None
        return row

    def file_row(self, job_id: str, path: str) -> Row | None:
        return self._row(FILE, "files", "job_id = ? AND path = ?", (job_id, path))

    def unpublished_event_row(self, job_id: str, seq: int) -> Row | None:
        names = ("event_id", "type", "payload")
        where = "job_id = ? AND seq = ? AND published_at IS NULL"
        return self._row(names, "outbox", where, (job_id, seq))

    def pruned_at(self, job_id: str) -> float | None:
        row = self._row(("pruned_at",), "pruned_jobs", "job_id = ?", (job_id,))
        return row["pruned_at"] if row else None

    # -- imports

    def _upsert(self, table: str, key: Row, values: Row) -> None:
        names = (*key, *values)
        updates = ", ".join(f'"{name}" = excluded."{name}"' for name in values)
        self.db.conn.execute(
            f"INSERT INTO {table} ({_columns(names)}) VALUES ({_marks(names)}) "
            f"ON CONFLICT({_columns(tuple(key))}) DO UPDATE SET {updates}",
            (*key.values(), *values.values()),
        )

    def _job_exists(self, job_id: str) -> None:
        """The job's row, empty until its state record comes (a part may come first)."""
        self.db.conn.execute("INSERT OR IGNORE INTO jobs (job_id) VALUES (?)", (job_id,))

    def import_job_state(
        self, job_id: str, job: Mapping[str, Any], phases: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """The job's row and its phases' state columns; ``last_seq`` only grows."""
        with self.transaction():
            self._upsert("jobs", {"job_id": job_id}, {n: job[n] for n in JOB_STATE})
            for phase, columns in phases.items():
                values = {n: columns[n] for n in PHASE_STATE}
                self._upsert("phases", {"job_id": job_id, "phase": phase}, values)
            self._raise_seq(job_id, job["last_seq"])

    def import_request(self, job_id: str, request: str, source: str, created_at: float) -> None:
        values = {"request": request, "source": source, "created_at": created_at}
        with self.transaction():
            self._upsert("jobs", {"job_id": job_id}, values)

    def import_plan(self, job_id: str, plan: str | None) -> None:
        with self.transaction():
            if plan is not None:
                self._job_exists(job_id)
            self.db.conn.execute("UPDATE jobs SET plan = ? WHERE job_id = ?", (plan, job_id))

    def import_phase(self, job_id: str, phase: str, result: Mapping[str, Any] | None) -> None:
        """The phase's result columns (None: the phase is gone)."""
        with self.transaction():
            if result is None:
                self.db.conn.execute(
                    "DELETE FROM phases WHERE job_id = ? AND phase = ?", (job_id, phase)
                )
                return
            self._job_exists(job_id)
            values = {n: result[n] for n in PHASE_RESULT}
            self._upsert("phases", {"job_id": job_id, "phase": phase}, values)
            if phase == VERIFYING_PHASE:
                self.db.conn.execute(
                    "UPDATE jobs SET verification = ? WHERE job_id = ?",
                    (result["verification"], job_id),
                )

    def import_file(self, job_id: str, path: str, file: Mapping[str, Any] | None) -> None:
        """The file (None: it is gone)."""
        with self.transaction():
            if file is None:
                self.db.conn.execute(
                    "DELETE FROM files WHERE job_id = ? AND path = ?", (job_id, path)
                )
                return
            self._job_exists(job_id)
            values = {n: file[n] for n in FILE}
            self._upsert("files", {"job_id": job_id, "path": path}, values)

    def import_event(self, job_id: str, seq: int, event: Mapping[str, Any] | None) -> None:
        """An event not yet published (None: it was published)."""
        with self.transaction():
            if event is None:
                self.db.conn.execute(
                    "UPDATE outbox SET published_at = coalesce(published_at, ?) "
                    "WHERE job_id = ? AND seq = ?",
                    (time.time(), job_id, seq),
                )
                return
            values = {n: event[n] for n in ("event_id", "type", "payload")}
            values |= {"created_at": time.time(), "published_at": None}
            self._upsert("outbox", {"job_id": job_id, "seq": seq}, values)
            self._raise_seq(job_id, seq)
