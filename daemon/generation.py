"""Running one phase: prompt, call, interpret the answer, ask again until the phase is whole.

Each call is made through the call policy (see daemon.callpolicy) and each answer read
and folded into the phase by daemon.answers: an answer cut at ``max_tokens`` keeps every
complete file and the next call asks only for the rest, naming the files already
produced, so a phase finishes whatever its per-call budget; a broken answer is asked
again with the precise error fed back, a bounded number of times. Once the phase's files
are in, the code checks run over them; files that fail go back to the model once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import anthropic
from pydantic import BaseModel

from daemon import prompts
from daemon.answers import absorb, interpret, report_continuation, take_streamed, with_file_plan
from daemon.callpolicy import CallPolicy
from daemon.checks import CheckLimits, Problem, run_checks
from daemon.contract import FileRecord, Usage
from daemon.errors import PhaseFailed
from daemon.llm import LLMAnswer, LLMCall, LLMProvider, TextSink
from daemon.metrics import Metrics
from daemon.paths import PathIndex
from daemon.progress import BUILDING, WAITING, Point
from daemon.ratelimit import RateLimiter
from daemon.records import CallRecord, JobRecord, NewFile, PhaseOutcome
from daemon.settings import Settings
from daemon.states import ArchPlan, Phase
from daemon.states.base import FilePlanMore, PlannedFile
from daemon.streaming import FileScanner
from daemon.verification import Repair, Verifier

log = logging.getLogger(__name__)

FIX_REQUEST = (
    "These files fail the code checks or the file plan above: send each of them again (or "
    "write it, if it is missing), fixed and complete, with complete set to true. Leave the "
    "other files of this phase as they are."
)


def _fixable(problems: Sequence[Problem], pending_areas: frozenset[str]) -> list[Problem]:
    """The problems this phase can fix alone: in the files themselves (syntax, JSON,
    placeholders), or imports into a folder no phase still to run will write to.
    Undeclared dependencies are the job's, reported when it ends; files the checks
    skipped are reported as they are."""
    return [
        problem
        for problem in problems
        if problem.kind in ("content", "plan")
        or (problem.kind == "import" and not any(map(problem.path.startswith, pending_areas)))
    ]


def _off_plan(problems: Sequence[Problem]) -> list[Problem]:
    """Files written outside the phase's plan: said to the model, but not sent back (an
    answer cannot take a file back); they stay, with a warning."""
    return [p for p in problems if p.kind == "unplanned"]


@cache
def api_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The output schema as the API accepts it (the SDK's own rewrite of pydantic schemas)."""
    return anthropic.transform_schema(model)


@dataclass
class PhaseRun:
    """One phase of one job being run: what it builds on, and its state across calls."""

    job: JobRecord
    phase: Phase
    manifest: Sequence[FileRecord]
    hooks: PhaseHooks
    budget: int
    produced: dict[str, NewFile] = field(default_factory=dict)
    feedback: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    repairs: int = 0
    failures: int = 0
    redo: set[str] = field(default_factory=set)  # files sent back for a fix
    paths: PathIndex = field(default_factory=PathIndex)  # the job's, as of the current call
    plan: ArchPlan | None = None  # ARCH: the architecture, once an answer gave it
    planned: dict[str, PlannedFile] = field(default_factory=dict)  # ARCH: the file plan so far
    stalls: int = 0  # answers in a row that added nothing and did not finish the phase
    notes: list[str] = field(default_factory=list)  # warnings for the phase's event
    answered: set[str] = field(default_factory=set)  # digests of the requests answered
    repair: Repair | None = None  # VERIFY: the failing files this run is to fix


@dataclass
class PhaseHooks:
    """How a running phase reaches the store: files as they close (those that closed in
    one piece of the stream together), each call's record, and how many tokens the job
    may still spend (0: no limit)."""

    checkpoint: Callable[[list[NewFile]], None] = lambda new: None
    record_call: Callable[[CallRecord], None] = lambda call: None
    tokens_left: int = 0
    # Folders that phases still to run will write to: an import into one of them may
    # be satisfied later, so it is not this phase's to fix.
    pending_areas: frozenset[str] = frozenset()
    # Every file the job has so far (its imports are checked against them).
    job_files: Callable[[], dict[str, str]] = dict
    # Where the phase is, for the progress file (see daemon.progress).
    progress: Callable[[Point], None] = lambda point: None
    # ARCH: the plan so far, after each answer that added to it (a restart continues it).
    checkpoint_plan: Callable[[ArchPlan], None] = lambda plan: None


class PhaseRunner:
    """Turns one phase of one job into a PhaseOutcome, or raises PhaseFailed with the reason.

    Answers stream in; each file is handed to ``hooks.checkpoint`` the moment its JSON
    object closes, so a crash or a broken stream costs only the file being written. A
    phase that starts with files already committed (it was interrupted) asks only for the
    others. Every call waits its turn at the shared rate limiter.
    """

    def __init__(
        self,
        llm: LLMProvider,
        settings: Settings,
        call_slots: asyncio.Semaphore,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        guard: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._settings = settings
        self._policy = CallPolicy(
            llm, settings.llm, call_slots, limiter or RateLimiter(), self._metrics, guard
        )

    async def run(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        committed: Sequence[FileRecord] = (),
        hooks: PhaseHooks | None = None,
    ) -> PhaseOutcome:
        budget = self._settings.max_tokens_for(phase.name, job.request.options.max_tokens)
        run = PhaseRun(job, phase, manifest, hooks or PhaseHooks(), budget)
        run.produced = {f.path: NewFile(f.path, f.content) for f in committed}
        if not phase.produces_files and job.plan is not None:  # ARCH cut short: continue it
            run.plan = job.plan.model_copy(update={"files": []})
            run.planned = {entry.path: entry for entry in job.plan.files}
        started = time.monotonic()
        try:
            await self._until_done(run)
            warnings = run.notes + await self._checked(run)
        except PhaseFailed as exc:
            exc.usage = run.usage
            raise
        return PhaseOutcome(
            phase=phase.name,
            step=phase.step,
            files=list(run.produced.values()),
            plan=with_file_plan(run),
            usage=run.usage,
            duration_s=time.monotonic() - started,
            warnings=warnings,
        )

    async def verify(
        self,
        job: JobRecord,
        phase: Phase,
        files: dict[str, str],
        writers: dict[str, str],
        committed: Sequence[FileRecord],
        hooks: PhaseHooks,
    ) -> PhaseOutcome:
        """The VERIFY state (see daemon.verification)."""
        verifier = Verifier(self, self._settings.verify, self._check_limits())
        return await verifier.run(job, phase, files, writers, committed, hooks)

    async def repair(
        self, job: JobRecord, phase: Phase, repair: Repair, calls: int, hooks: PhaseHooks
    ) -> tuple[list[NewFile], Usage, int]:
        """One focused repair for VERIFY (``phase``): the writer's failing files back, fixed.
        Returns the files it sent, what it cost, and VERIFY's calls so far (``calls``
        before it): VERIFY's calls are numbered across its repairs, for the call records
        and the cassettes, and ``llm.max_calls_per_phase`` bounds them all."""
        budget = self._settings.max_tokens_for(phase.name, job.request.options.max_tokens)
        run = PhaseRun(job, phase, (), hooks, budget, calls=calls, repair=repair)
        try:
            await self._until_done(run)
        except PhaseFailed as exc:
            exc.usage = run.usage
            raise
        return list(run.produced.values()), run.usage, run.calls

    async def _until_done(self, run: PhaseRun) -> None:
        while True:
            before, redo = dict(run.produced), set(run.redo)  # files close while streaming
            answer = await self._call(run)
            if answer is None:
                continue
            result, added = interpret(run, answer, before, redo)
            if absorb(run, result, added, self._settings.llm):
                return
            report_continuation(run, result)
            self._metrics.retry("repair" if result.errors else "continuation")

    async def _checked(self, run: PhaseRun) -> list[str]:
        """The code checks: files that fail them go back to the model once, with the
        errors; what still fails becomes the phase's warnings, as do checks skipped (a
        file over the size cap, checks past their time budget)."""
        hooks = run.hooks
        if not (run.phase.produces_files and self._settings.jobs.code_checks):
            return []
        existing = hooks.job_files()
        problems = await self._check(run, existing)
        fixable = _fixable(problems, hooks.pending_areas)
        if fixable:
            log.info(
                "%d files fail the code checks; asking for a fix",
                len({p.path for p in fixable}),
                extra={"job_id": run.job.job_id, "phase": run.phase.name, "layout": "indented"},
            )
            run.feedback = [p.text for p in fixable + _off_plan(problems)] + [FIX_REQUEST]
            run.redo = {p.path for p in fixable}
            self._metrics.retry("repair")
            await self._until_done(run)
            problems = await self._check(run, existing)
            fixable = _fixable(problems, hooks.pending_areas)
        skipped = [p for p in problems if p.kind == "skipped"]
        for problem in skipped + _off_plan(problems):
            log.warning(
                "%s",
                problem.text,
                extra={"job_id": run.job.job_id, "phase": run.phase.name, "layout": "indented"},
            )
        return [p.text for p in fixable + _off_plan(problems) + skipped]

    async def _check(self, run: PhaseRun, existing: dict[str, str]) -> list[Problem]:
        new = {path: file.content for path, file in run.produced.items()}
        run.hooks.progress(Point(run.calls, WAITING))  # the checks run in a worker process
        problems = await run_checks("check_files", self._check_limits(), new, existing)
        plan = run.job.plan
        planned = plan.planned_for(run.phase.name) if plan is not None else []
        if planned:  # conformance to the file plan
            entries = [
                (e.path, e.purpose, tuple((x.name, x.signature) for x in e.exports))
                for e in planned
            ]
            problems += await run_checks(
                "check_plan", self._check_limits(), run.phase.name, entries, new
            )
        return problems

    async def check_project(self, files: dict[str, str]) -> list[Problem]:
        """The cross-file checks over a whole job (off the event loop, within the budget)."""
        return await run_checks("check_project", self._check_limits(), files)

    def _check_limits(self) -> CheckLimits:
        jobs = self._settings.jobs
        return CheckLimits(jobs.check_timeout_s, jobs.check_max_file_bytes)

    def _build_call(self, run: PhaseRun) -> LLMCall:
        job, phase = run.job, run.phase
        run.calls += 1
        limit = self._settings.llm.max_calls_per_phase
        if run.calls > limit:
            raise PhaseFailed(
                f"{phase.name}: not complete after {limit} calls (llm.max_calls_per_phase)"
            )
        model = self._settings.model_for(phase.name, job.request.options.model)
        caching = self._settings.llm.prompt_caching
        messages = self._messages(run)
        if _digest(model, run.budget, messages) in run.answered:
            # Nothing above should lead here; should it, the request still changes.
            log.warning(
                "the next call would repeat an answered request; saying so",
                extra={"job_id": job.job_id, "phase": phase.name, "layout": "indented"},
            )
            run.feedback.append(
                f"This request was answered before (call {run.calls}) without finishing "
                "the phase: answer with the files still missing, or complete set to true."
            )
            messages = self._messages(run)
        return LLMCall(
            job_id=job.job_id,
            phase=phase.name,
            call=run.calls,
            model=model,
            max_tokens=run.budget,
            system=prompts.system_blocks(caching),
            messages=messages,
            schema=api_schema(_answer_model(run)),
            timeout_s=self._settings.timeout_for(phase.name),
        )

    def _messages(self, run: PhaseRun) -> list[dict[str, Any]]:
        caching = self._settings.llm.prompt_caching
        if run.repair is not None:
            return prompts.build_repair_messages(
                run.job.request,
                run.job.plan,
                run.phase,
                run.repair,
                list(run.produced),
                run.feedback,
                cache=caching,
            )
        if run.phase.produces_files:
            produced = [path for path in run.produced if path not in run.redo]
            return prompts.build_messages(
                run.job.request,
                run.job.plan,
                run.phase,
                run.manifest,
                produced,
                run.feedback,
                cache=caching,
                written=run.hooks.job_files,
            )
        # ARCH: once the architecture is in, the calls continue its file plan.
        plan = run.plan and run.plan.model_copy(update={"files": list(run.planned.values())})
        return prompts.build_messages(
            run.job.request,
            plan,
            run.phase,
            (),
            list(run.planned),
            run.feedback,
            cache=caching,
        )

    async def _call(self, run: PhaseRun) -> LLMAnswer | None:
        """One call; None when it failed for a passing reason (after waiting to retry)."""
        run.hooks.progress(Point(run.calls + 1, BUILDING))
        call = self._build_call(run)
        if run.phase.produces_files:  # read afresh: phases running beside this one add files
            run.paths = PathIndex([*run.hooks.job_files(), *run.produced])
        answer = await self._policy.complete(run, call, _committer(run))
        if answer is not None:
            run.answered.add(_digest(call.model, call.max_tokens, call.messages))
        return answer


def _answer_model(run: PhaseRun) -> type[BaseModel]:
    """The schema of the next answer: ARCH answers its architecture first, then the rest
    of its file plan."""
    if not run.phase.produces_files and run.plan is not None:
        return FilePlanMore
    return run.phase.output_model


def _digest(model: str, max_tokens: int, messages: list[dict[str, Any]]) -> str:
    """What makes two requests of one phase the same (the system prompt and the schema
    are the phase's own and never change)."""
    body = json.dumps([model, max_tokens, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def _committer(run: PhaseRun) -> TextSink:
    """What the phase does with each piece of an answer as it streams in: a files phase
    commits the files that closed in it."""
    if not run.phase.produces_files:
        return lambda chunk: None
    scanner = FileScanner()

    def on_text(chunk: str) -> None:
        closed = [new for item in scanner.feed(chunk) if (new := take_streamed(item, run))]
        if closed:
            run.hooks.checkpoint(closed)

    return on_text
