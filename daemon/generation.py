"""Running one phase: prompt, call, interpret the answer, ask again until the phase is whole.

An answer cut at ``max_tokens`` keeps every complete file and the next call asks only for
the rest, naming the files already produced; a phase therefore finishes whatever its
per-call budget, as long as one file fits (the budget grows up to a ceiling if not).
Broken answers (invalid JSON, schema errors, unsafe paths, refusals) are asked again with
the precise error fed back, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import anthropic
from pydantic import ValidationError
from pydantic_core import from_json

from daemon import chaos, prompts
from daemon.checks import Problem, check_files
from daemon.errors import (
    JobBudgetExceeded,
    PermanentLLMError,
    PhaseFailed,
    RetryableLLMError,
    RetryLater,
    UnsafePath,
)
from daemon.llm import LLMAnswer, LLMCall, LLMProvider
from daemon.metrics import Metrics
from daemon.models import FileRecord, Usage
from daemon.paths import check_path
from daemon.ratelimit import RateLimiter, estimate_tokens
from daemon.settings import Settings
from daemon.states import ArchPlan, Phase
from daemon.states.base import GeneratedFile, PhaseFiles
from daemon.store import CallRecord, JobRecord, NewFile, PhaseOutcome
from daemon.streaming import FileScanner

log = logging.getLogger(__name__)
CUT_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded"})
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0


@dataclass
class Interpretation:
    """What one answer contributed: complete files, whether the phase is done, what was wrong."""

    files: list[NewFile] = field(default_factory=list)
    plan: ArchPlan | None = None
    done: bool = False
    cut: bool = False
    errors: list[str] = field(default_factory=list)


def interpret_files(answer: LLMAnswer) -> Interpretation:
    if answer.stop_reason == "refusal":
        return Interpretation(errors=["the answer was a refusal; produce the files as asked"])
    errors: list[str] = []
    if answer.stop_reason in CUT_STOP_REASONS:
        files = _safe(recover_files(answer.text), errors)
        return Interpretation(files=files, cut=True, errors=errors)
    try:
        parsed = PhaseFiles.model_validate_json(answer.text)
    except ValidationError as exc:
        return Interpretation(errors=[_validation_summary(exc)])
    files = _safe(parsed.files, errors)
    return Interpretation(files=files, done=parsed.complete and not errors, errors=errors)


def recover_files(text: str) -> list[GeneratedFile]:
    """The complete files of a cut answer. Incomplete strings are dropped by the partial
    parser, so a file object missing its path or content was the one being written."""
    try:
        partial = from_json(text, allow_partial=True) if text.strip() else {}
    except ValueError:
        return []
    items = partial.get("files", []) if isinstance(partial, dict) else []
    recovered = []
    for item in items if isinstance(items, list) else []:
        try:
            recovered.append(GeneratedFile.model_validate(item))
        except ValidationError:
            break
    return recovered


def _safe(files: Sequence[GeneratedFile], errors: list[str]) -> list[NewFile]:
    safe = []
    for item in files:
        try:
            safe.append(NewFile(check_path(item.path), item.content))
        except UnsafePath as exc:
            errors.append(f"{exc}; use a relative POSIX path inside the project")
    return safe


def interpret_plan(answer: LLMAnswer) -> Interpretation:
    if answer.stop_reason == "refusal":
        return Interpretation(errors=["the answer was a refusal; produce the plan as asked"])
    if answer.stop_reason in CUT_STOP_REASONS:
        return Interpretation(cut=True)
    try:
        return Interpretation(plan=ArchPlan.model_validate_json(answer.text), done=True)
    except ValidationError as exc:
        return Interpretation(errors=[_validation_summary(exc)])


def _validation_summary(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
        for err in exc.errors()[:5]
    ]
    return "the answer is not valid JSON for the schema: " + "; ".join(problems)


def _report_continuation(
    job_id: str, phase: Phase, progress: PhaseProgress, result: Interpretation
) -> None:
    extra = {"job_id": job_id, "phase": phase.state}
    if result.errors:
        log.warning("  answer rejected (%s); asking again", "; ".join(result.errors), extra=extra)
    elif result.cut:
        log.info(
            "  answer cut at max_tokens: kept %d complete files, asking for the rest "
            "(max_tokens %d)",
            len(result.files),
            progress.budget,
            extra=extra,
        )
    else:
        log.info("  %d files so far; asking for the rest", len(progress.produced), extra=extra)


FIX_REQUEST = (
    "These files fail the code checks above: send each of them again, fixed and complete, "
    "with complete set to true. Leave the other files of this phase as they are."
)


def _fixable(
    progress: PhaseProgress, existing: dict[str, str], pending_areas: frozenset[str]
) -> list[Problem]:
    """The problems this phase can fix alone: in the files themselves (syntax, JSON,
    placeholders), or imports into a folder no phase still to run will write to.
    Undeclared dependencies are the job's, reported when it ends."""
    new = {path: file.content for path, file in progress.produced.items()}
    return [
        problem
        for problem in check_files(new, existing)
        if problem.kind == "content"
        or (problem.kind == "import" and not any(map(problem.path.startswith, pending_areas)))
    ]


@cache
def api_schema(model: type) -> dict[str, Any]:
    """The output schema as the API accepts it (the SDK's own rewrite of pydantic schemas)."""
    return anthropic.transform_schema(model)


@dataclass
class PhaseProgress:
    """The running state of one phase across its calls."""

    budget: int
    produced: dict[str, NewFile] = field(default_factory=dict)
    feedback: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    repairs: int = 0
    failures: int = 0
    redo: set[str] = field(default_factory=set)  # files sent back for a fix
    plan: ArchPlan | None = None


@dataclass
class PhaseHooks:
    """How a running phase reaches the store: files as they close, each call's record,
    and how many tokens the job may still spend (0: no limit)."""

    checkpoint: Callable[[NewFile], None] = lambda new: None
    record_call: Callable[[CallRecord], None] = lambda call: None
    tokens_left: int = 0
    # Folders that phases still to run will write to: an import into one of them may
    # be satisfied later, so it is not this phase's to fix.
    pending_areas: frozenset[str] = frozenset()
    # Every file the job has so far (its imports are checked against them).
    job_files: Callable[[], dict[str, str]] = dict


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
    ) -> None:
        self._metrics = metrics or Metrics()
        self._llm = llm
        self._settings = settings
        self._slots = call_slots
        self._limiter = limiter or RateLimiter()

    async def run(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        committed: Sequence[FileRecord] = (),
        hooks: PhaseHooks | None = None,
    ) -> PhaseOutcome:
        hooks = hooks or PhaseHooks()
        started = time.monotonic()
        budget = self._settings.max_tokens_for(phase.state, job.request.options.max_tokens)
        progress = PhaseProgress(budget=budget)
        progress.produced = {f.path: NewFile(f.path, f.content) for f in committed}
        try:
            await self._until_done(job, phase, manifest, progress, hooks)
            warnings = await self._checked(job, phase, manifest, progress, hooks)
        except PhaseFailed as exc:
            exc.usage = progress.usage
            raise
        return PhaseOutcome(
            phase=phase.state,
            step=phase.step,
            files=list(progress.produced.values()),
            plan=progress.plan,
            usage=progress.usage,
            duration_s=time.monotonic() - started,
            warnings=warnings,
        )

    async def _until_done(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        progress: PhaseProgress,
        hooks: PhaseHooks,
    ) -> None:
        interpret = interpret_files if phase.produces_files else interpret_plan
        while True:
            answer = await self._call(job, phase, manifest, progress, hooks)
            if answer is None:
                continue
            result = interpret(answer)
            if self._absorb(phase, progress, result):
                return
            _report_continuation(job.job_id, phase, progress, result)
            self._metrics.retry("repair" if result.errors else "continuation")

    async def _checked(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        progress: PhaseProgress,
        hooks: PhaseHooks,
    ) -> list[str]:
        """The code checks: files that fail them go back to the model once, with the
        errors; what still fails becomes the phase's warnings."""
        if not (phase.produces_files and self._settings.jobs.code_checks):
            return []
        existing = hooks.job_files()
        problems = _fixable(progress, existing, hooks.pending_areas)
        if problems:
            log.info(
                "  %d files fail the code checks; asking for a fix",
                len({p.path for p in problems}),
                extra={"job_id": job.job_id, "phase": phase.state},
            )
            progress.feedback = [f"{p.path}: {p.message}" for p in problems] + [FIX_REQUEST]
            progress.redo = {p.path for p in problems}
            self._metrics.retry("repair")
            await self._until_done(job, phase, manifest, progress, hooks)
            problems = _fixable(progress, existing, hooks.pending_areas)
        return [f"{p.path}: {p.message}" for p in problems]

    def _absorb(self, phase: Phase, progress: PhaseProgress, result: Interpretation) -> bool:
        """Fold one answer into the phase; True when the phase is finished."""
        limits = self._settings.llm
        for new in result.files:
            progress.produced[new.path] = new
            progress.redo.discard(new.path)
        progress.plan = result.plan or progress.plan
        progress.feedback = list(result.errors)
        if result.errors:
            progress.repairs += 1
            if progress.repairs > limits.max_repairs:
                raise PhaseFailed(
                    f"{phase.state}: still invalid after {limits.max_repairs} repairs: "
                    + "; ".join(result.errors)
                )
        if result.cut and not result.files:
            if progress.budget >= limits.max_tokens_ceiling:
                raise PhaseFailed(
                    f"{phase.state}: one answer does not fit in max_tokens={progress.budget} "
                    f"(llm.max_tokens_ceiling)"
                )
            progress.budget = min(progress.budget * 2, limits.max_tokens_ceiling)
        return result.done

    def _build_call(
        self, job: JobRecord, phase: Phase, manifest: Sequence[FileRecord], progress: PhaseProgress
    ) -> LLMCall:
        progress.calls += 1
        limit = self._settings.llm.max_calls_per_phase
        if progress.calls > limit:
            raise PhaseFailed(
                f"{phase.state}: not complete after {limit} calls (llm.max_calls_per_phase)"
            )
        return LLMCall(
            job_id=job.job_id,
            phase=phase.state,
            call=progress.calls,
            model=self._settings.model_for(phase.state, job.request.options.model),
            max_tokens=progress.budget,
            system=prompts.system_blocks(self._settings.llm.prompt_caching),
            messages=prompts.build_messages(
                job.request,
                job.plan,
                phase,
                manifest,
                [path for path in progress.produced if path not in progress.redo],
                progress.feedback,
                cache=self._settings.llm.prompt_caching,
            ),
            schema=api_schema(phase.output_model),
            timeout_s=self._settings.timeout_for(phase.state),
        )

    async def _call(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        progress: PhaseProgress,
        hooks: PhaseHooks,
    ) -> LLMAnswer | None:
        """One call; None when it failed for a passing reason (after waiting to retry)."""
        call = self._build_call(job, phase, manifest, progress)
        scanner = FileScanner() if phase.produces_files else None

        def on_text(chunk: str) -> None:
            for item in scanner.feed(chunk) if scanner else ():
                _take_streamed(item, progress, hooks.checkpoint)
            chaos.point("mid_stream", call.job_id)

        estimate = estimate_tokens(call.messages, prompts.SYSTEM)
        await self._limiter.acquire(estimate, call.max_tokens)
        started, clock = time.time(), time.monotonic()
        try:
            async with self._slots:
                answer = await self._llm.complete(call, on_text)
        except (PermanentLLMError, RetryableLLMError) as exc:
            self._metrics.call_failed(call.phase, clock)
            self._limiter.settle(estimate, 0, call.max_tokens, 0)
            hooks.record_call(_record(call, None, str(exc), Usage(), started, clock))
            if isinstance(exc, PermanentLLMError):
                raise PhaseFailed(f"{phase.state}: {exc}") from None
            await self._back_off(call, progress, exc)
            return None
        usage = answer.usage.model_copy(
            update={"cost_usd": self._settings.llm.cost_usd(call.model, answer.usage)}
        )
        self._limiter.settle(
            estimate,
            usage.input_tokens + usage.cache_creation_input_tokens,
            call.max_tokens,
            usage.output_tokens,
        )
        self._limiter.observe(answer.rate_limits)
        hooks.record_call(_record(call, answer.stop_reason, None, usage, started, clock))
        self._metrics.call_answered(call.phase, clock, usage)
        progress.usage += usage
        chaos.point("after_answer", job.job_id)
        self._check_job_budget(job, progress, hooks)
        return replace(answer, usage=usage)

    def _check_job_budget(self, job: JobRecord, progress: PhaseProgress, hooks: PhaseHooks) -> None:
        spent = progress.usage.total_tokens
        if hooks.tokens_left and spent > hooks.tokens_left:
            limit = self._settings.llm.max_tokens_per_job
            raise JobBudgetExceeded(
                f"job used more than llm.max_tokens_per_job = {limit} tokens; stopped"
            )

    async def _back_off(
        self, call: LLMCall, progress: PhaseProgress, exc: RetryableLLMError
    ) -> None:
        """Wait before the next try: as long as the API asked (up to a cap), else
        exponentially; a rate limit or overload pauses every job's calls."""
        limits = self._settings.llm
        progress.failures += 1
        if progress.failures > limits.max_retries:
            raise PhaseFailed(
                f"{call.phase}: model unavailable after {limits.max_retries} retries: {exc}"
            )
        self._metrics.retry(exc.kind)
        self._limiter.observe(exc.headers)
        delay_s = exc.retry_after_s
        if delay_s is None:
            delay_s = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (progress.failures - 1))
            delay_s *= 1 - 0.25 * random.random()
        if delay_s > limits.max_retry_after_s:
            raise RetryLater(
                f"{call.phase}: the API asked to wait {delay_s:.0f} s", delay_s=delay_s
            )
        log.warning(
            "  model call failed (%s); %d files kept, retrying in %.1f s",
            exc,
            len(progress.produced),
            delay_s,
            extra={"job_id": call.job_id, "phase": call.phase},
        )
        if exc.kind in ("rate_limit", "overloaded"):
            self._limiter.pause(delay_s)  # the next acquire() waits, for every job
        else:
            await asyncio.sleep(delay_s)


def _record(
    call: LLMCall,
    stop_reason: str | None,
    error: str | None,
    usage: Usage,
    started: float,
    clock: float,
) -> CallRecord:
    return CallRecord(
        job_id=call.job_id,
        phase=call.phase,
        call=call.call,
        model=call.model,
        max_tokens=call.max_tokens,
        stop_reason=stop_reason,
        error=error,
        usage=usage,
        started_at=started,
        duration_s=time.monotonic() - clock,
    )


def _take_streamed(
    item: GeneratedFile, progress: PhaseProgress, checkpoint: Callable[[NewFile], None]
) -> None:
    """A file that closed mid-stream: keep and commit it (unsafe paths wait for the whole
    answer, whose interpretation reports them)."""
    try:
        new = NewFile(check_path(item.path), item.content)
    except UnsafePath:
        return
    progress.redo.discard(new.path)
    if progress.produced.get(new.path) == new:
        return
    progress.produced[new.path] = new
    checkpoint(new)
