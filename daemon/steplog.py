"""The step log: a job's progress as people read it, a banner per step of the phase table,
a line per phase and a count of files per step, and how the job ended."""

from __future__ import annotations

import logging

from daemon.contract import FileRecord, Verification
from daemon.records import JobRecord
from daemon.states import PHASE_BY_NAME, JobState, Phase
from daemon.store import Store

log = logging.getLogger(__name__)


class StepReporter:
    """Logs a job's progress for people: step banners, per-phase and per-step counts."""

    def __init__(self, job: JobRecord, store: Store) -> None:
        self._job = job
        self._store = store
        self._extra = {"job_id": job.job_id}
        self._groups = [PHASE_BY_NAME[name].group for name in job.planned]
        self._steps_total = max(group.number for group in self._groups)
        self._announced: set[int] = set()

    def phase_starting(self, phase: Phase) -> None:
        group = phase.group
        if group.number not in self._announced:
            self._announced.add(group.number)
            log.info(
                "STEP %d: %s",
                group.number,
                group.title,
                extra={**self._extra, "layout": "banner"},
            )
        log.info("Step %s: %s...", phase.step, phase.progress, extra=self._extra)

    def phase_done(
        self,
        phase: Phase,
        files: list[FileRecord],
        done: set[str],
        verification: Verification | None = None,
    ) -> None:
        """After a phase: its file count (VERIFY: what it found and fixed), and the step's
        once all its phases are done."""
        if verification is not None:
            self._verified(verification, len(files))
        elif phase.produces_files:
            log.info("✓ Generated %d %s files", len(files), phase.noun, extra=self._extra)
        group = phase.group
        members = [n for n in self._job.planned if PHASE_BY_NAME[n].group == group]
        if all(name in done for name in members):
            count = self._store.count_files(self._job.job_id, members)
            suffix = f" ({count} files)" if phase.writes_planned_files else ""
            log.info(
                "✓ Step %d/%d: %s%s",
                group.number,
                self._steps_total,
                group.done,
                suffix,
                extra=self._extra,
            )

    def _verified(self, summary: Verification, repaired: int) -> None:
        tiers = " and ".join(summary.tiers)
        fixed = summary.problems_before - summary.problems_after
        log.info(
            "✓ Verified (%s): %d problems found, %d fixed in %d files by %d repair calls "
            "(%s), %d remain%s",
            tiers,
            summary.problems_before,
            max(fixed, 0),
            repaired,
            summary.repair_calls,
            "1 round" if summary.rounds == 1 else f"{summary.rounds} rounds",
            summary.problems_after,
            "" if summary.builds is None else f"; builds: {'yes' if summary.builds else 'no'}",
            extra=self._extra,
        )
        if summary.toolchain_skipped:
            log.warning(
                "toolchain tier not run: %s",
                summary.toolchain_skipped,
                extra={**self._extra, "layout": "indented"},
            )

    def phase_failed(self, phase: Phase, error: str) -> None:
        log.error("✗ Step %s failed: %s", phase.step, error, extra=self._extra)

    def job_done(self, state: JobState) -> None:
        total = self._store.count_files(self._job.job_id)
        if state is JobState.COMPLETED:
            log.info("Chained generation completed: %d files generated", total, extra=self._extra)
        else:
            log.warning(
                "Chained generation ended %s: %d files generated, failed phases: %s",
                state.name.lower(),
                total,
                ", ".join(self._job.failed_phases) or "none",
                extra=self._extra,
            )
