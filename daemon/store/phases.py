"""Phases: started, committed (files, result, the job's next state and the events in one
transaction), failed, interrupted, found dead, and the record of every model call."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.contract import FileRecord, PhaseCompleted, PhaseFailure, PhaseStarted, Usage
from daemon.progress import Point
from daemon.records import CallRecord, JobRecord, PhaseOutcome
from daemon.states import JobState, PhaseStatus
from daemon.store.moves import Moves
from daemon.store.schema import USAGE_COLUMNS


@dataclass(frozen=True)
class PhaseRecord:
    phase: str
    status: PhaseStatus
    attempts: int
    usage: Usage
    duration_s: float | None
    error: str | None


@dataclass(frozen=True)
class Death:
    """A process died while a phase ran: the phase's deaths so far, how many of the last
    came in a row at one point without progress, and where this one came."""

    total: int
    in_a_row: int
    point: Point | None


class Phases(Moves):
    """The life of a job's phases."""

    def record_death(self, job_id: str, phase: str, point: Point | None) -> Death | None:
        """A phase found running when its job starts was left so by a process that died
        in it. Record where (``point``, None when unknown) and return the death, or None
        when the phase is not running. A death counts against the phase (``in_a_row``)
        only while it brings no progress: the phase committed no file since the last death
        and died at the same point; else the count starts again at 1. A death while the
        phase waited, or where it was is not known, leaves the count as it was."""
        row = self.db.conn.execute(
            "SELECT status, interruptions, death_call, death_stage, death_chars, death_files, "
            "deaths_in_a_row FROM phases WHERE job_id = ? AND phase = ?",
            (job_id, phase),
        ).fetchone()
        status, deaths, *last, files_then, in_a_row = row
        if status != PhaseStatus.RUNNING.value:
            return None
        if point is None or not point.evidence:
            with self.transaction():  # counted, but neither for nor against the phase
                self._move_phase(job_id, phase, "crash", ", interruptions = interruptions + 1")
            return Death(deaths + 1, in_a_row, point)
        files = self.count_files(job_id, [phase])
        previous = Point(*last) if None not in last else None
        same_point = previous is not None and point.near(previous)
        in_a_row = in_a_row + 1 if same_point and files == files_then else 1
        where = (point.call, point.stage, point.chars)
        with self.transaction():
            # Counted once: the phase is no longer 'running' until it starts again, so a
            # phase still waiting to restart when the next death comes is not blamed twice.
            self._move_phase(
                job_id,
                phase,
                "crash",
                ", interruptions = interruptions + 1, death_call = ?, death_stage = ?, "
                "death_chars = ?, death_files = ?, deaths_in_a_row = ?",
                (*where, files, in_a_row),
            )
        return Death(deaths + 1, in_a_row, point)

    def running_phases(self) -> list[tuple[str, str]]:
        """``(job_id, phase)`` of every phase marked running."""
        rows = self.db.conn.execute(
            "SELECT job_id, phase FROM phases WHERE status = ?", (PhaseStatus.RUNNING.value,)
        ).fetchall()
        return [(job_id, phase) for job_id, phase in rows]

    def deaths_in_a_row(self, job_id: str, phase: str) -> int:
        row = self.db.conn.execute(
            "SELECT deaths_in_a_row FROM phases WHERE job_id = ? AND phase = ?", (job_id, phase)
        ).fetchone()
        return int(row[0]) if row else 0

    def interrupt_phase(self, job_id: str, phase: str) -> None:
        """A phase stopped on purpose (shutdown): not a crash; it runs again at the next start."""
        with self.transaction():
            self._move_phase(job_id, phase, "interrupt")

    def start_phase(self, job: JobRecord, phase: str, step: str, state: JobState) -> int:
        """Mark a phase running, checkpoint the job's state, announce it; returns the attempt."""
        with self.transaction():
            self._set_state(job.job_id, state)
            attempt = self._move_phase(
                job.job_id,
                phase,
                "start",
                ", attempts = attempts + 1, started_at = ?, error = NULL",
                (time.time(),),
            )
            self._mark(job.job_id, f"phase/{phase}")  # its started_at, its error cleared
            started = PhaseStarted(phase=phase, step=step, attempt=attempt)
            self._emit(job.job_id, job.request_id, started)
        job.state = state
        return attempt

    def complete_phase(
        self,
        job: JobRecord,
        outcome: PhaseOutcome,
        next_state: JobState,
        job_warnings: Sequence[str] = (),
    ) -> list[FileRecord]:
        """One transaction: the files, the phase's result, the job's next state, the events."""
        records = [new.record() for new in outcome.files]
        with self.transaction():
            self._upsert_files(job.job_id, outcome.phase, records)
            self._finish_phase_row(job.job_id, outcome, "complete", None)
            if outcome.plan is not None:
                self._set_plan(job.job_id, outcome.plan)
            if outcome.verification is not None:
                self.db.conn.execute(
                    "UPDATE jobs SET verification = ? WHERE job_id = ?",
                    (outcome.verification.model_dump_json(), job.job_id),
                )
            completed = PhaseCompleted(
                phase=outcome.phase,
                step=outcome.step,
                files=records,
                usage=outcome.usage,
                duration_s=round(outcome.duration_s, 3),
                warnings=outcome.warnings,
                verification=outcome.verification,
                plan=outcome.plan,
            )
            self._emit(job.job_id, job.request_id, completed)
            self._advance(job, next_state, job_warnings)
        job.state = next_state
        if outcome.plan is not None:
            job.plan = outcome.plan
        return records

    def fail_phase(
        self,
        job: JobRecord,
        outcome: PhaseOutcome,
        error: str,
        next_state: JobState,
        job_warnings: Sequence[str] = (),
    ) -> None:
        with self.transaction():
            attempts = self._finish_phase_row(job.job_id, outcome, "fail", error)
            failure = PhaseFailure(
                phase=outcome.phase, step=outcome.step, error=error, attempts=attempts
            )
            self._emit(job.job_id, job.request_id, failure)
            self._advance(job, next_state, job_warnings)
        job.state = next_state
        job.failed_phases.append(outcome.phase)

    def _finish_phase_row(
        self, job_id: str, outcome: PhaseOutcome, trigger: str, error: str | None
    ) -> int:
        self._mark(job_id, f"phase/{outcome.phase}")
        return self._move_phase(
            job_id,
            outcome.phase,
            trigger,
            ", finished_at = ?, duration_s = ?, error = ?, warnings = ?, "
            + ", ".join(f"{name} = {name} + ?" for name in USAGE_COLUMNS),
            (
                time.time(),
                outcome.duration_s,
                error,
                json.dumps(outcome.warnings),
                *(getattr(outcome.usage, name) for name in USAGE_COLUMNS),
            ),
        )

    def phases(self, job_id: str) -> list[PhaseRecord]:
        rows = self.db.conn.execute(
            "SELECT phase, status, attempts, "
            + ", ".join(USAGE_COLUMNS)
            + ", duration_s, error FROM phases WHERE job_id = ?",
            (job_id,),
        ).fetchall()
        records = [
            PhaseRecord(
                phase=r[0],
                status=PhaseStatus(r[1]),
                attempts=r[2],
                usage=Usage(**dict(zip(USAGE_COLUMNS, r[3:9], strict=True))),
                duration_s=r[9],
                error=r[10],
            )
            for r in rows
        ]
        order = self.job(job_id).planned
        return sorted(records, key=lambda rec: order.index(rec.phase))

    def record_call(self, call: CallRecord) -> None:
        """One model call of a phase, answered or not, with its usage and error. Written
        with the store's next transaction (a file, the phase's end), not one of its own."""
        usage = call.usage
        self._pending_calls.append(
            (
                call.job_id,
                call.phase,
                call.call,
                call.model,
                call.max_tokens,
                call.stop_reason,
                call.error,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens,
                usage.cost_usd,
                call.started_at,
                call.duration_s,
            )
        )

    def calls(self, job_id: str, phase: str | None = None) -> list[CallRecord]:
        self.flush()
        query = (
            "SELECT job_id, phase, call, model, max_tokens, stop_reason, error, input_tokens, "
            "output_tokens, cache_read_input_tokens, cache_creation_input_tokens, cost_usd, "
            "started_at, duration_s FROM calls WHERE job_id = ?"
        )
        args: tuple[str, ...] = (job_id,)
        if phase is not None:
            query, args = query + " AND phase = ?", (job_id, phase)
        return [
            CallRecord(
                job_id=r[0],
                phase=r[1],
                call=r[2],
                model=r[3],
                max_tokens=r[4],
                stop_reason=r[5],
                error=r[6],
                usage=Usage(
                    input_tokens=r[7],
                    output_tokens=r[8],
                    cache_read_input_tokens=r[9],
                    cache_creation_input_tokens=r[10],
                    cost_usd=r[11],
                    calls=1,
                ),
                started_at=r[12],
                duration_s=r[13],
            )
            for r in self.db.conn.execute(query + " ORDER BY id", args).fetchall()
        ]
