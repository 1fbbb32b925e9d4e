"""Jobs: created with their phases and job.accepted in one transaction, listed, picked up
oldest first, put aside, cancelled, resumed and ended."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from typing import Any

from daemon.contract import GenerationRequest, JobAccepted, JobResumed
from daemon.machine import JobMachine, phase_dest, phase_sources
from daemon.records import JobRecord
from daemon.states import JobState, PhaseStatus
from daemon.store.base import _marks
from daemon.store.events import STATE
from daemon.store.moves import TERMINAL_NAMES, UNFINISHED, Moves
from daemon.store.schema import partition_of


class Jobs(Moves):
    """The life of a job as a whole."""

    def create_job(
        self, job_id: str, request: GenerationRequest, source: str, planned: list[str]
    ) -> bool:
        """Create a job with its phases and its job.accepted event; False if it already exists
        (or existed: a pruned job leaves its id behind)."""
        now = time.time()
        with self.transaction():
            if self.db.conn.execute(
                "SELECT 1 FROM pruned_jobs WHERE job_id = ?", (job_id,)
            ).fetchone():
                return False
            cursor = self.db.conn.execute(
                "INSERT OR IGNORE INTO jobs (job_id, request_id, project_name, request, source, "
                '"partition", state, planned, cancel_requested, created_at, updated_at) '
                "VALUES (?,?,?,?,?,?,?,?,0,?,?)",
                (
                    job_id,
                    request.request_id,
                    request.project_name,
                    request.model_dump_json(),
                    source,
                    partition_of(source),
                    JobState.PENDING.name,
                    json.dumps(planned),
                    now,
                    now,
                ),
            )
            if cursor.rowcount == 0:
                return False
            self.db.conn.executemany(
                "INSERT INTO phases (job_id, phase, status, attempts) VALUES (?, ?, ?, 0)",
                [(job_id, phase, PhaseStatus.PENDING.value) for phase in planned],
            )
            self._mark(job_id, STATE, "request")
            self._emit(
                job_id,
                request.request_id,
                JobAccepted(project_name=request.project_name, phases=planned),
            )
        return True

    def jobs(self, states: Iterable[JobState] | None = None) -> list[dict[str, Any]]:
        query = "SELECT job_id, project_name, state, created_at, updated_at FROM jobs"
        args: list[str] = []
        if states is not None:
            names = [s.name for s in states]
            query += f" WHERE state IN ({_marks(names)})"
            args = names
        rows = self.db.conn.execute(query + " ORDER BY created_at", args).fetchall()
        keys = ("job_id", "project_name", "state", "created_at", "updated_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def jobs_by_state(self) -> dict[str, int]:
        return dict(self.db.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))

    def unfinished_jobs(self) -> int:
        return int(
            self.db.conn.execute(
                f"SELECT count(*) FROM jobs WHERE {UNFINISHED}", TERMINAL_NAMES
            ).fetchone()[0]
        )

    def runnable_jobs(
        self, exclude: Iterable[str], limit: int, partitions: Collection[int] | None = None
    ) -> list[str]:
        """Jobs not in a terminal state, oldest first, skipping those already running here;
        with ``partitions``, only the jobs of those requests partitions."""
        exclude = set(exclude)
        where, args = "", tuple[int, ...]()
        if partitions is not None:
            owned = tuple(partitions)
            where, args = f' AND "partition" IN ({_marks(owned)})', owned
        rows = self.db.conn.execute(
            f"SELECT job_id FROM jobs WHERE {UNFINISHED}{where} "
            "AND (not_before IS NULL OR not_before <= ?) ORDER BY created_at LIMIT ?",
            (*TERMINAL_NAMES, *args, time.time(), limit + len(exclude)),
        ).fetchall()
        return [row[0] for row in rows if row[0] not in exclude][:limit]

    def request_cancel(self, job_id: str) -> None:
        self.job(job_id)
        with self.transaction():
            self.db.conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
            self._mark(job_id, STATE)

    def cancel_requested(self, job_id: str) -> bool:
        row = self.db.conn.execute(
            "SELECT cancel_requested FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return bool(row and row[0])

    def move(self, job: JobRecord, state: JobState, trigger: str = "advance") -> None:
        """Persist a move of the job's machine by ``trigger`` that ran no phase (skip,
        cancel); a terminal state is announced with job.completed in the same transaction."""
        with self.transaction():
            self._advance(job, state, trigger=trigger)
        job.state = state

    def defer(self, job_id: str, phase: str, delay_s: float) -> None:
        """Put a job aside for ``delay_s`` (its phase is interrupted, not failed)."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE jobs SET not_before = ? WHERE job_id = ?", (time.time() + delay_s, job_id)
            )
            self._move_phase(job_id, phase, "defer")

    def hold(self, job_id: str, phase: str, reason: str, delay_s: float) -> None:
        """Put a job aside because the model API refuses the account: until ``delay_s``
        has passed or the daemon starts again (:meth:`release_held`)."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE jobs SET not_before = ?, held = ? WHERE job_id = ?",
                (time.time() + delay_s, reason, job_id),
            )
            self._move_phase(job_id, phase, "defer")

    def release_held(self, partition: int | None = None) -> int:
        """At start (in cluster mode, at a partition's restore): jobs put aside for the
        model API's refusal may run at once."""
        where, args = "", tuple[int, ...]()
        if partition is not None:
            where, args = ' AND "partition" = ?', (partition,)
        with self.transaction():
            released = self.db.conn.execute(
                "UPDATE jobs SET not_before = NULL, held = NULL WHERE held IS NOT NULL"
                f"{where} RETURNING job_id",
                args,
            ).fetchall()
            for (job_id,) in released:
                self._mark(job_id, STATE)
        return len(released)

    def announce_resumed(
        self, reason: str, partition: int | None = None
    ) -> list[tuple[str, JobState]]:
        """A job.resumed event for every job stopped in a phase (of the requests partition
        if given), in one transaction; returns those jobs and their states."""
        where, args = "", tuple[int, ...]()
        if partition is not None:
            where, args = ' AND "partition" = ?', (partition,)
        rows = self.db.conn.execute(
            f"SELECT job_id, request_id, state FROM jobs WHERE {UNFINISHED}{where} "
            "ORDER BY created_at",
            (*TERMINAL_NAMES, *args),
        ).fetchall()
        resumed = [(job_id, request_id, JobState[state]) for job_id, request_id, state in rows]
        resumed = [item for item in resumed if item[2].phase is not None]
        with self.transaction():
            for job_id, request_id, state in resumed:
                self._emit(job_id, request_id, JobResumed(from_phase=state.name, reason=reason))
        return [(job_id, state) for job_id, _, state in resumed]

    def reopen(self, job_id: str, reason: str) -> str | None:
        """Re-queue a job: its failed and unfinished phases become pending again, and so
        does VERIFY (the phases run again change the project it verified).

        Returns the phase it resumes from, or None when nothing is left to run.
        """
        job = self.job(job_id)
        machine = JobMachine(job.planned, job.state, self.phase_statuses(job_id))
        try:
            reopened, resumes = machine.reopen(), machine.current
        finally:
            machine.release()
        if not reopened:
            return None
        with self.transaction():
            for name in reopened:
                self._move_phase(job_id, name, "reopen")
            self.db.conn.execute("UPDATE jobs SET cancel_requested = 0 WHERE job_id = ?", (job_id,))
            self._set_state(job_id, resumes, "reopen")
            self._emit(job_id, job.request_id, JobResumed(from_phase=resumes.name, reason=reason))
        return resumes.name

    def end_job(self, job_id: str) -> None:
        """Fail an unfinished job whose runner broke: every phase the machine's ``fail``
        may move fails, and job.completed announces it. Written from the transition table
        without building the job's machines: they may be what broke."""
        job = self.job(job_id)
        if job.state.is_terminal:
            return
        sources = [s.value for s in phase_sources("fail")]
        with self.transaction():
            failed = self.db.conn.execute(
                "UPDATE phases SET status = ?, error = 'internal error' "
                f"WHERE job_id = ? AND status IN ({_marks(sources)}) RETURNING phase",
                (phase_dest("fail").value, job_id, *sources),
            ).fetchall()
            self._mark(job_id, STATE, *(f"phase/{name}" for (name,) in failed))
            self._advance(job, JobState.FAILED, trigger="fail")
        job.state = JobState.FAILED
