"""The job's and its phases' states as the store holds them, and the guarded writes that
persist what the state machines decided: ``UPDATE … WHERE status IN (the trigger's
sources)``, raising IllegalMove when the stored state is not one of them."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from daemon.contract import GenerationRequest, JobCompleted, JobStatus, Usage, Verification
from daemon.errors import IllegalMove, JobNotFound
from daemon.machine import JOB_TRIGGERS, phase_dest, phase_sources
from daemon.records import JobRecord
from daemon.states import ArchPlan, JobState, PhaseStatus
from daemon.store.base import _marks
from daemon.store.events import STATE
from daemon.store.files import Files
from daemon.store.schema import USAGE_COLUMNS

# How job.completed names each terminal state.
JOB_STATUS: dict[JobState, JobStatus] = {
    JobState.COMPLETED: "completed",
    JobState.PARTIAL: "partial",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
TERMINAL_NAMES = tuple(state.name for state in JobState if state.is_terminal)
UNFINISHED = f"state NOT IN ({_marks(TERMINAL_NAMES)})"


class Moves(Files):
    """Reading a job's states, and persisting their moves."""

    def job(self, job_id: str) -> JobRecord:
        row = self.db.conn.execute(
            "SELECT job_id, request_id, request, state, planned, plan, cancel_requested "
            "FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        failed = self._phases_with_status(job_id, PhaseStatus.FAILED)
        return JobRecord(
            job_id=row[0],
            request_id=row[1],
            request=GenerationRequest.model_validate_json(row[2]),
            state=JobState[row[3]],
            planned=json.loads(row[4]),
            plan=ArchPlan.model_validate_json(row[5]) if row[5] else None,
            failed_phases=failed,
            cancel_requested=bool(row[6]),
        )

    def _phases_with_status(self, job_id: str, status: PhaseStatus) -> list[str]:
        rows = self.db.conn.execute(
            "SELECT phase FROM phases WHERE job_id = ? AND status = ?", (job_id, status.value)
        ).fetchall()
        return [row[0] for row in rows]

    def phase_statuses(self, job_id: str) -> dict[str, PhaseStatus]:
        rows = self.db.conn.execute(
            "SELECT phase, status FROM phases WHERE job_id = ?", (job_id,)
        ).fetchall()
        return {phase: PhaseStatus(status) for phase, status in rows}

    def job_usage(self, job_id: str) -> Usage:
        totals = self.db.conn.execute(
            "SELECT "
            + ", ".join(f"coalesce(sum({n}), 0)" for n in USAGE_COLUMNS)
            + " FROM phases WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return Usage(**dict(zip(USAGE_COLUMNS, totals, strict=True)))

    def _set_state(self, job_id: str, state: JobState, trigger: str = "advance") -> None:
        """Persist the job's state as its machine moved it by ``trigger``, guarded by the
        states that trigger may move a job from."""
        sources = [s.name for s in JOB_TRIGGERS[trigger]]
        cursor = self.db.conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ? WHERE job_id = ? AND state IN ({_marks(sources)})",
            (state.name, time.time(), job_id, *sources),
        )
        if cursor.rowcount == 0:
            row = self.db.conn.execute(
                "SELECT state FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            raise IllegalMove(
                f"job {job_id}: cannot {trigger} to {state.name} from {row[0] if row else 'nowhere'}"
            )
        self._mark(job_id, STATE)

    def _move_phase(
        self,
        job_id: str,
        phase: str,
        trigger: str,
        assignments: str = "",
        args: Sequence[object] = (),
    ) -> int:
        """Persist a phase's move by ``trigger`` (with more ``assignments``, each starting
        with a comma), guarded by the statuses the machine's table allows it from; returns
        the phase's attempts. Raises IllegalMove when the phase is in none of them."""
        sources = [s.value for s in phase_sources(trigger)]
        row = self.db.conn.execute(
            f"UPDATE phases SET status = ?{assignments} WHERE job_id = ? AND phase = ? "
            f"AND status IN ({_marks(sources)}) RETURNING attempts",
            (phase_dest(trigger).value, *args, job_id, phase, *sources),
        ).fetchone()
        if row is None:
            found = self.db.conn.execute(
                "SELECT status FROM phases WHERE job_id = ? AND phase = ?", (job_id, phase)
            ).fetchone()
            raise IllegalMove(
                f"job {job_id}: cannot {trigger} {phase}, which is {found[0] if found else 'not planned'}"
            )
        self._mark(job_id, STATE)
        return int(row[0])

    def _advance(
        self,
        job: JobRecord,
        next_state: JobState,
        warnings: Sequence[str] = (),
        trigger: str = "advance",
    ) -> None:
        """Persist the job's next state; a job that ends (which it does once: no trigger
        moves a job from a terminal state but reopen) is announced with job.completed."""
        self._set_state(job.job_id, next_state, trigger)
        if next_state.is_terminal:
            self._emit_job_completed(job, next_state, warnings)

    def _emit_job_completed(self, job: JobRecord, state: JobState, warnings: Sequence[str]) -> None:
        files_total = self.db.conn.execute(
            "SELECT count(*) FROM files WHERE job_id = ?", (job.job_id,)
        ).fetchone()[0]
        verified = self.db.conn.execute(
            "SELECT verification FROM jobs WHERE job_id = ?", (job.job_id,)
        ).fetchone()[0]
        completed = JobCompleted(
            status=JOB_STATUS[state],
            files_total=files_total,
            failed_phases=self._phases_with_status(job.job_id, PhaseStatus.FAILED),
            usage=self.job_usage(job.job_id),
            warnings=list(warnings),
            verification=Verification.model_validate_json(verified) if verified else None,
        )
        self._emit(job.job_id, job.request_id, completed)
