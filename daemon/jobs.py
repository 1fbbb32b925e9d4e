"""Running one job: its task walks the job's state machine, runs each phase (one after
another, or every phase whose needs are done at once), and commits each step."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from daemon import chaos
from daemon.callpolicy import MODEL_ACCESS_RETRY_S, budget_refusal
from daemon.contract import Usage
from daemon.errors import (
    JobBudgetExceeded,
    ModelAccessDenied,
    PhaseFailed,
    RetryLater,
    StoreError,
)
from daemon.generation import PhaseHooks, PhaseRunner
from daemon.machine import JobMachine
from daemon.metrics import Metrics
from daemon.outputs import OutputWriter
from daemon.progress import WAITING, NoProgress, PhaseProgress, Point, ProgressFile, job_key
from daemon.records import JobRecord, PhaseOutcome
from daemon.settings import JobsSettings, LLMSettings
from daemon.states import PHASE_BY_NAME, JobState, Phase, PhaseStatus, needs_closure
from daemon.steplog import StepReporter
from daemon.store import Death, Store

log = logging.getLogger(__name__)


def record_deaths(store: Store, progress: ProgressFile | NoProgress) -> int:
    """At start, before anything slow: the phases found running were left so by a process
    that died in them. Recording where at once keeps the previous process's death points
    should this start be killed too. Returns how many."""
    deaths = 0
    for job_id, phase in store.running_phases():
        point = progress.previous.get((job_key(job_id), phase))
        death = store.record_death(job_id, phase, point)
        if death is not None:
            deaths += 1
            log_death(job_id, phase, death)
    return deaths


def log_death(job_id: str, phase: str, death: Death) -> None:
    log.warning(
        "%s: the daemon died while this phase ran (%s; %d in a row at that point "
        "without progress, %d in all)",
        phase,
        death.point.describe() if death.point else "where is not known",
        death.in_a_row,
        death.total,
        extra={"job_id": job_id},
    )


class JobRunner:
    """Walks one job through its machines, committing each step.

    Sequential: one phase at a time, in the order of the table. Parallel: every phase
    whose needs are done runs at once (after ARCH the backend and frontend branches side
    by side), each in its own task; commits stay one transaction per phase either way.
    """

    def __init__(
        self,
        store: Store,
        phases: PhaseRunner,
        outputs: OutputWriter,
        on_commit: Callable[[], None],
        jobs: JobsSettings | None = None,
        llm: LLMSettings | None = None,
        metrics: Metrics | None = None,
        progress: ProgressFile | NoProgress | None = None,
        guard: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        jobs, llm = jobs or JobsSettings(), llm or LLMSettings()
        self._guard = guard  # awaited before a phase starts (cluster mode: still our partition)
        self._metrics = metrics or Metrics()
        self._code_checks = jobs.code_checks
        self._max_crashes = jobs.max_phase_crashes
        self._max_tokens_per_job = llm.max_tokens_per_job
        self._parallel = jobs.execution == "parallel"
        self._store = store
        self._phases = phases
        self._outputs = outputs
        self._on_commit = on_commit
        self._stopping = False
        self._suspects = asyncio.Lock()
        self._progress = progress or NoProgress()
        self._ran_here: set[tuple[str, str]] = set()  # phases this process started
        self._last_death: dict[tuple[str, str], Death] = {}

    def stop_after_phase(self) -> None:
        """Let running phases finish and commit, but start no new one."""
        self._stopping = True

    async def run(self, job_id: str) -> JobState:
        store = self._store
        job = store.job(job_id)
        machine = JobMachine(job.planned, job.state, store.phase_statuses(job_id))
        if machine.done:
            # A resumed job: the process that committed these files may have died before
            # it wrote them out.
            self._outputs.submit(job_id, store.files(job_id))
        report = StepReporter(job, store)
        try:
            if self._parallel:
                await self._run_parallel(job, machine, report)
            else:
                await self._run_sequential(job, machine, report)
        finally:
            machine.release()
        if machine.finished:
            report.job_done(machine.current)
        return machine.current

    async def _run_sequential(
        self, job: JobRecord, machine: JobMachine, report: StepReporter
    ) -> None:
        while not machine.finished and not self._stopping:
            if self._store.cancel_requested(job.job_id):
                self._cancel(job, machine)
            elif machine.current is JobState.PENDING or machine.state in machine.done:
                self._settle(job, machine)
            elif not await self._run_phase(job, machine, machine.state, report):
                return  # put aside until a retry-after has passed
            self._on_commit()

    async def _run_parallel(
        self, job: JobRecord, machine: JobMachine, report: StepReporter
    ) -> None:
        running: dict[asyncio.Task[bool], str] = {}
        holding = False  # a phase was put aside: finish the others, start no new one
        try:
            while not machine.finished:
                cancelling = self._store.cancel_requested(job.job_id)
                if not (self._stopping or holding or cancelling):
                    self._settle(job, machine)
                    for name in machine.ready(running.values()):
                        task = asyncio.create_task(self._run_phase(job, machine, name, report))
                        running[task] = name
                if not running:
                    if cancelling:
                        self._cancel(job, machine)
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    running.pop(task)
                    holding = holding or not task.result()
                self._on_commit()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _settle(self, job: JobRecord, machine: JobMachine) -> None:
        """Move the job to its frontier; a job with nothing left ends here."""
        machine.settle()
        if machine.finished:
            self._store.move(job, machine.current)

    def _cancel(self, job: JobRecord, machine: JobMachine) -> None:
        machine.cancel()
        self._store.move(job, machine.current, trigger="cancel")

    async def _run_phase(
        self, job: JobRecord, machine: JobMachine, name: str, report: StepReporter
    ) -> bool:
        """Run one phase and commit its outcome; False when the job was put aside to wait
        out a long retry-after."""
        phase = PHASE_BY_NAME[name]
        in_a_row = self._deaths_in_a_row(job, machine, phase)
        refusal = self._refusal(job, phase, in_a_row)
        if refusal is not None:
            await self._fail(job, machine, phase, refusal)
            report.phase_failed(phase, str(refusal))
            return True
        if not in_a_row:
            return await self._attempt(job, machine, phase, report)
        # The daemon died while this phase ran. Such phases run one at a time: a poison
        # phase that kills the daemon early at every start would otherwise take the
        # phases restarted beside it down at the same early point each time.
        async with self._suspects:
            return await self._attempt(job, machine, phase, report)

    def _deaths_in_a_row(self, job: JobRecord, machine: JobMachine, phase: Phase) -> int:
        """How many deaths in a row the phase brought about, counting the one it was found
        in now, if any. A phase found running that this process started was put aside by
        an error of its own (a full disk), not by a death."""
        store, key = self._store, (job.job_id, phase.name)
        if machine.status(phase.name) is not PhaseStatus.RUNNING:
            return store.deaths_in_a_row(*key)
        if key in self._ran_here:
            machine.fire(phase.name, "interrupt")
            store.interrupt_phase(*key)
            return store.deaths_in_a_row(*key)
        machine.fire(phase.name, "crash")
        death = store.record_death(
            *key, self._progress.previous.get((job_key(job.job_id), phase.name))
        )
        if death is None:
            return store.deaths_in_a_row(*key)
        log_death(job.job_id, phase.name, death)
        self._last_death[key] = death
        return death.in_a_row

    async def _attempt(
        self, job: JobRecord, machine: JobMachine, phase: Phase, report: StepReporter
    ) -> bool:
        store = self._store
        report.phase_starting(phase)
        slot = self._progress.enter(job.job_id, phase.name)  # before 'running' is on disk
        try:
            if self._guard is not None:
                await self._guard(job.job_id)
            machine.fire(phase.name, "start")
            store.start_phase(job, phase.name, phase.step, machine.current)
            self._ran_here.add((job.job_id, phase.name))
            self._on_commit()
            return await self._perform(job, machine, phase, report, slot)
        except asyncio.CancelledError:
            # Stopped anywhere (the project checks too): a clean stop, not a death. Only a
            # phase still running is marked, so a phase already committed stays so.
            self._interrupt(job, machine, phase)
            raise
        finally:
            slot.close()

    async def _perform(
        self,
        job: JobRecord,
        machine: JobMachine,
        phase: Phase,
        report: StepReporter,
        slot: PhaseProgress,
    ) -> bool:
        store = self._store
        started = time.monotonic()
        try:
            outcome = await self._generate(job, machine, phase, slot)
        except asyncio.CancelledError:
            self._metrics.phase_ended(phase.name, "interrupted", started)
            raise
        except RetryLater as exc:
            self._metrics.phase_ended(phase.name, "deferred", started)
            machine.fire(phase.name, "defer")
            store.defer(job.job_id, phase.name, exc.delay_s)
            log.warning(
                "%s; job put aside for %.0f s", exc, exc.delay_s, extra={"job_id": job.job_id}
            )
            return False
        except ModelAccessDenied as exc:
            self._metrics.phase_ended(phase.name, "deferred", started)
            machine.fire(phase.name, "defer")
            store.hold(job.job_id, phase.name, str(exc), MODEL_ACCESS_RETRY_S)
            log.warning("%s: job put aside (%s)", phase.name, exc, extra={"job_id": job.job_id})
            return False
        except PhaseFailed as exc:
            self._metrics.phase_ended(phase.name, "failed", started)
            await self._fail(job, machine, phase, exc)
            report.phase_failed(phase, str(exc))
            return True
        self._metrics.phase_ended(phase.name, "completed", started)
        if machine.finished:  # the job failed meanwhile (a sibling phase ran out of budget)
            self._interrupt(job, machine, phase)  # not left running in an ended job
            return True
        slot.mark(Point(0, WAITING))  # the project checks run in a worker process
        if outcome.verification is not None:  # VERIFY ran the project checks, and more
            final = list(outcome.verification.remaining)
        elif machine.finishes_with(phase.name):
            final = await self._project_warnings(job, outcome)
        else:
            final = []
        machine.phase_done(phase.name)
        machine.settle()
        records = store.complete_phase(job, outcome, machine.current, final)
        chaos.point("after_commit", job.job_id)
        self._outputs.submit(job.job_id, records)
        report.phase_done(phase, records, machine.done, outcome.verification)
        return True

    async def _generate(
        self, job: JobRecord, machine: JobMachine, phase: Phase, slot: PhaseProgress
    ) -> PhaseOutcome:
        """The phase's calls. An error that is not the model's, the store's or a stop
        fails the phase with its cause: no error leaves a job unfinished."""
        store = self._store
        try:
            if phase.verifies:
                return await self._phases.verify(
                    job,
                    phase,
                    files=store.file_contents(job.job_id),
                    writers=store.file_phases(job.job_id),
                    committed=store.files(job.job_id, phase.name),
                    hooks=self._hooks(job, machine, phase, slot),
                )
            return await self._phases.run(
                job,
                phase,
                manifest=store.files_of_phases(job.job_id, needs_closure(phase.name)),
                committed=store.files(job.job_id, phase.name),
                hooks=self._hooks(job, machine, phase, slot),
            )
        except (PhaseFailed, RetryLater, ModelAccessDenied, StoreError):
            raise
        except Exception as exc:
            log.exception("%s: internal error", phase.name, extra={"job_id": job.job_id})
            raise PhaseFailed(f"{phase.name}: internal error: {type(exc).__name__}: {exc}") from exc

    def _refusal(self, job: JobRecord, phase: Phase, in_a_row: int) -> PhaseFailed | None:
        """Why the phase must not run again, if it must not: it killed the daemon too
        often at the same point, or the job has no tokens left."""
        if in_a_row >= self._max_crashes:
            death = self._last_death.get((job.job_id, phase.name))
            where = death.point.describe() if death and death.point else "at one point"
            return PhaseFailed(
                f"{phase.name}: the daemon died {in_a_row} times in a row while running this "
                f"phase, each time {where} with no file committed in between "
                "(jobs.max_phase_crashes); not trying again"
            )
        return budget_refusal(self._max_tokens_per_job, lambda: self._tokens_left(job))

    def _tokens_left(self, job: JobRecord) -> int:
        return self._max_tokens_per_job - self._store.job_usage(job.job_id).total_tokens

    def _hooks(
        self, job: JobRecord, machine: JobMachine, phase: Phase, slot: PhaseProgress
    ) -> PhaseHooks:
        store = self._store
        return PhaseHooks(
            progress=slot.mark,
            checkpoint=lambda new: store.stage_files(job.job_id, phase.name, new),
            checkpoint_plan=lambda plan: store.stage_plan(job.job_id, plan),
            record_call=store.record_call,
            tokens_left=self._tokens_left(job) if self._max_tokens_per_job else 0,
            job_files=lambda: store.file_contents(job.job_id),
            pending_areas=frozenset(
                PHASE_BY_NAME[name].area
                for name in machine.planned
                if name not in machine.done and name != phase.name and PHASE_BY_NAME[name].area
            ),
        )

    async def _fail(
        self, job: JobRecord, machine: JobMachine, phase: Phase, exc: PhaseFailed
    ) -> None:
        if machine.finished:  # the job failed meanwhile (a sibling phase ran out of budget)
            self._interrupt(job, machine, phase)
            return
        ends_job = phase.critical or isinstance(exc, JobBudgetExceeded)
        usage = exc.usage or Usage()
        outcome = PhaseOutcome(phase=phase.name, step=phase.step, usage=usage)
        if ends_job or machine.finishes_with(phase.name):
            final = await self._project_warnings(job, outcome)
            if machine.finished:  # a sibling ran out of budget too while the checks ran
                self._interrupt(job, machine, phase)
                return
        else:
            final = []
        machine.phase_done(phase.name, failed=True)
        if ends_job:
            machine.fail()
        else:
            machine.settle()
        self._store.fail_phase(job, outcome, str(exc), machine.current, final)

    def _interrupt(self, job: JobRecord, machine: JobMachine, phase: Phase) -> None:
        """Stop a phase cleanly, if it is running: it runs again at the next start."""
        if machine.status(phase.name) is PhaseStatus.RUNNING:
            machine.fire(phase.name, "interrupt")
            self._store.interrupt_phase(job.job_id, phase.name)

    async def _project_warnings(self, job: JobRecord, last: PhaseOutcome) -> list[str]:
        """The cross-file checks over the whole project, once the job is done."""
        if not self._code_checks:
            return []
        files = self._store.file_contents(job.job_id)
        files.update((new.path, new.content) for new in last.files)
        problems = await self._phases.check_project(files)  # off the loop, within a budget
        for problem in problems:
            log.warning("%s", problem.text, extra={"job_id": job.job_id, "layout": "indented"})
        return [p.text for p in problems]

    def restore_outputs(self) -> int:
        """Write out the files of phases committed but not yet announced; returns how many
        phases. The relay publishes a phase.completed event only once the phase's files
        are written (see daemon.outputs), so a process that died in between left the event
        unpublished. The files come from the store: the event may have been stored
        without contents (too large to publish). Idempotent."""
        restored = 0
        for event in self._store.unpublished_completions():
            if event.phase is not None:
                self._outputs.write_now(event.job_id, self._store.files(event.job_id, event.phase))
                restored += 1
        return restored
