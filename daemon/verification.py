"""The VERIFY state: the whole project checked, and what fails sent back to its writer.

Each round finds the project's problems (the static tier always; the toolchain tier when
``verify.toolchain`` is on), maps each to the file it is about and that file to the phase
that wrote it (the file plan says, else the store), and gives every such phase one focused
call with its failing files, the exact errors and the files they refer to. Rounds are
bounded by ``verify.max_rounds`` and end as soon as one fails to lower the number of
problems: a fix that does not fix is not paid for twice. What remains is the phase's
warnings and the ``remaining`` list of its ``Verification``.

Repaired files are checkpointed as they arrive (under VERIFY, their latest writer), so a
VERIFY cut short by a crash resumes from the repaired project.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.checks import CheckLimits, Problem, run_checks
from daemon.contract import FileRecord, Usage, Verification
from daemon.errors import PhaseFailed
from daemon.records import JobRecord, NewFile, PhaseOutcome
from daemon.settings import VerifySettings
from daemon.states import FILE_PHASE_NAMES, PHASE_BY_NAME, Phase

if TYPE_CHECKING:
    from daemon.generation import PhaseHooks, PhaseRunner

log = logging.getLogger(__name__)
STATIC_CHECKS = "verify_static"  # the worker entry point of the static tier
# Problems named in one repair call (the rest wait for the next round).
MAX_PROBLEMS_PER_CALL = 40
# A problem of a file no phase of the job wrote goes to the last phase writing that area.
_AREA_WRITERS = (("backend/", "BE_CORE"), ("frontend/", "FE_CORE"), ("database/", "DB"))


@dataclass(frozen=True)
class Repair:
    """One focused call: a phase's failing files, their errors and what they refer to."""

    writer: Phase
    problems: tuple[Problem, ...]
    failing: Mapping[str, str]  # path -> current content
    referenced: Mapping[str, str]  # path -> content of the files the problems refer to


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    builds: bool | None = None
    skipped: str | None = None


class Verifier:
    """Runs VERIFY for one job: checks, repair rounds, the summary."""

    def __init__(self, phases: PhaseRunner, settings: VerifySettings, limits: CheckLimits) -> None:
        self._phases = phases
        self._settings = settings
        self._limits = limits

    async def run(
        self,
        job: JobRecord,
        phase: Phase,
        files: dict[str, str],
        writers: Mapping[str, str],
        committed: Sequence[FileRecord],
        hooks: PhaseHooks,
    ) -> PhaseOutcome:
        """``files``: the project as it is (VERIFY's own committed repairs included);
        ``writers``: path -> the phase that wrote it; ``committed``: the files VERIFY
        already repaired before it was cut short."""
        started = time.monotonic()
        repaired = {f.path: NewFile(f.path, f.content) for f in committed}
        found = await self._find(job, files)
        before, usage, calls, rounds = len(found.problems), Usage(), 0, 0
        notes: list[str] = []
        while found.problems and rounds < self._settings.max_rounds:
            repairs = self._repairs(job, found.problems, files, writers)
            if not repairs:
                break
            rounds += 1
            log.info(
                "round %d: %d problems in %d files; asking %s",
                rounds,
                len(found.problems),
                len({p.path for p in found.problems}),
                ", ".join(r.writer.name for r in repairs),
                extra={"job_id": job.job_id, "phase": phase.name, "layout": "indented"},
            )
            try:
                for repair in repairs:
                    new, used, calls = await self._phases.repair(job, phase, repair, calls, hooks)
                    usage += used
                    for item in new:
                        files[item.path] = item.content
                        repaired[item.path] = item
            except PhaseFailed as exc:  # out of calls or repairs: verification ends here
                notes.append(f"repairs stopped: {exc}")
                if isinstance(exc.usage, Usage):
                    usage += exc.usage
                found = await self._find(job, files)
                break
            after = await self._find(job, files)
            lowered = len(after.problems) < len(found.problems)
            found = after
            if not lowered:
                notes.append(
                    f"round {rounds} did not lower the number of problems "
                    f"({len(found.problems)}); no further rounds"
                )
                break
        summary = Verification(
            tiers=["static", "toolchain"]
            if self._settings.toolchain and not found.skipped
            else ["static"],
            problems_before=before,
            problems_after=len(found.problems),
            rounds=rounds,
            repair_calls=calls,
            builds=found.builds,
            remaining=[p.text for p in found.problems],
            toolchain_skipped=found.skipped,
        )
        for note in notes:
            log.warning(
                "%s", note, extra={"job_id": job.job_id, "phase": phase.name, "layout": "indented"}
            )
        return PhaseOutcome(
            phase=phase.name,
            step=phase.step,
            files=list(repaired.values()),
            usage=usage,
            duration_s=time.monotonic() - started,
            warnings=notes + summary.remaining,
            verification=summary,
        )

    async def _find(self, job: JobRecord, files: Mapping[str, str]) -> Findings:
        found = Findings(await run_checks(STATIC_CHECKS, self._limits, dict(files)))
        if not self._settings.toolchain:
            return found
        from daemon.verify import toolchain

        if (reason := toolchain.toolchain_available()) is not None:
            found.skipped = reason
            return found
        plan = job.plan
        report = await asyncio.to_thread(
            toolchain.run_toolchain,
            dict(files),
            cache_dir=self._settings.cache_dir,
            timeout_s=self._settings.timeout_s,
            memory_mb=self._settings.memory_mb,
            backend_package=plan.backend_package if plan else None,
        )
        found.problems += report.problems
        found.builds = report.builds
        found.skipped = report.skipped
        if report.openapi is not None:
            from daemon.verify.http_calls import http_calls
            from daemon.verify.routes import match_calls, routes_from_openapi

            # The static tier matched the calls with the routes read from the source; what
            # the running app serves may differ (a mount the source does not show).
            for problem in match_calls(http_calls(files), routes_from_openapi(report.openapi)):
                if not _same_call(problem, found.problems):
                    found.problems.append(problem)
        return found

    def _repairs(
        self,
        job: JobRecord,
        problems: Sequence[Problem],
        files: Mapping[str, str],
        writers: Mapping[str, str],
    ) -> list[Repair]:
        """The problems grouped by the phase that wrote their files, in phase order; only
        phases this job ran repair, and only problems of a file."""
        planned = {e.path: e.phase for e in job.plan.files} if job.plan else {}
        grouped: dict[str, list[Problem]] = {}
        for problem in problems:
            if problem.path not in files:
                continue
            writer = _writer(problem.path, planned, writers)
            if writer in job.planned:
                grouped.setdefault(writer, []).append(problem)
        repairs = []
        for name in FILE_PHASE_NAMES:
            items = grouped.get(name, [])[:MAX_PROBLEMS_PER_CALL]
            if not items:
                continue
            failing = {p.path: files[p.path] for p in items}
            refs = {
                ref: files[ref]
                for p in items
                for ref in getattr(p, "refs", ())
                if ref in files and ref not in failing
            }
            repairs.append(Repair(PHASE_BY_NAME[name], tuple(items), failing, refs))
        return repairs


def _same_call(problem: Problem, problems: Sequence[Problem]) -> bool:
    """Whether the static tier already reported the call of this route problem."""
    line = problem.message.split(":", 1)[0]
    return any(
        p.kind == "route" and p.path == problem.path and p.message.split(":", 1)[0] == line
        for p in problems
    )


def _writer(path: str, planned: Mapping[str, str], writers: Mapping[str, str]) -> str:
    """The phase answerable for a file: the plan's, else the store's, else its area's."""
    if path in planned:
        return planned[path]
    writer = writers.get(path, "")
    if writer in FILE_PHASE_NAMES:
        return writer
    return next((name for area, name in _AREA_WRITERS if path.startswith(area)), "CONFIG")
