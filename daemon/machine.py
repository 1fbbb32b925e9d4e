"""The explicit state machines of a job, built with ``transitions`` from one transition table.

A job has two levels of state, both checkpointed by the store:

- ``JobMachine``: the job's state, a member of ``JobState``: PENDING, then the phases of
  its plan one after another, then a terminal state. ``advance`` moves one phase on once
  the phase the job is at is done; ``settle`` advances as far as the done phases allow
  (run in parallel, phases behind the job's state may finish first).
- ``PhaseMachine``: one per phase, its state a ``PhaseStatus``: pending → running →
  completed | failed, with interrupted (stopped on purpose, put aside, or its process died
  in it) and back to pending (resume).

``PHASE_TRANSITIONS`` and ``JOB_TRIGGERS`` list every legal move. The machines enforce
them in memory; the store persists what a machine decided with the same table as its
guard (``UPDATE … WHERE status IN (sources)``), so an illegal move fails in both places.
The machines are pure: their callbacks only keep the job's sets of done and failed
phases. The job runner performs a phase, fires the events its result calls for, and the
store commits the new states together with the phase's files and events. Restoring a job
is building its machines at the stored states.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from transitions import EventData, Machine

from daemon.states import DONE_STATUSES, PHASE_BY_NAME, TERMINAL, JobState, PhaseStatus

PENDING, RUNNING = PhaseStatus.PENDING, PhaseStatus.RUNNING
COMPLETED, FAILED, INTERRUPTED = (
    PhaseStatus.COMPLETED,
    PhaseStatus.FAILED,
    PhaseStatus.INTERRUPTED,
)


@dataclass(frozen=True)
class Transition:
    """One legal move: ``trigger`` takes a phase from any of ``sources`` to ``dest``."""

    trigger: str
    sources: tuple[PhaseStatus, ...]
    dest: PhaseStatus
    only_verify: bool = False


PHASE_TRANSITIONS: tuple[Transition, ...] = (
    Transition("start", (PENDING, INTERRUPTED), RUNNING),
    Transition("complete", (RUNNING,), COMPLETED),
    # Not only a running phase fails: one refused before it runs again (it killed the
    # daemon too often, or the job has no tokens left), and those of an abandoned job.
    Transition("fail", (RUNNING, PENDING, INTERRUPTED), FAILED),
    Transition("interrupt", (RUNNING,), INTERRUPTED),  # stopped on purpose (shutdown)
    Transition("crash", (RUNNING,), INTERRUPTED),  # found running: its process died in it
    Transition("defer", (RUNNING,), INTERRUPTED),  # put aside until a retry-after
    Transition("reopen", (PENDING, RUNNING, INTERRUPTED, FAILED), PENDING),
    # VERIFY checks the others' files: it runs again when any of them does
    Transition("reopen", (COMPLETED,), PENDING, only_verify=True),
)


@functools.cache
def phase_sources(trigger: str) -> tuple[PhaseStatus, ...]:
    """Every status ``trigger`` may move a phase from (the store's guard)."""
    found = [s for t in PHASE_TRANSITIONS if t.trigger == trigger for s in t.sources]
    if not found:
        raise KeyError(f"no phase transition {trigger!r}")
    return tuple(dict.fromkeys(found))


def phase_dest(trigger: str) -> PhaseStatus:
    return next(t.dest for t in PHASE_TRANSITIONS if t.trigger == trigger)


ACTIVE_JOB_STATES: tuple[JobState, ...] = tuple(s for s in JobState if s not in TERMINAL)
# The job's triggers and the states each may move a job from. ``advance`` goes one phase
# on (or to COMPLETED or PARTIAL after the last); ``fail`` and ``cancel`` end the job;
# ``reopen`` takes it, from anywhere, back to PENDING to advance to its first phase left.
JOB_TRIGGERS: dict[str, tuple[JobState, ...]] = {
    "advance": ACTIVE_JOB_STATES,
    "fail": ACTIVE_JOB_STATES,
    "cancel": ACTIVE_JOB_STATES,
    "reopen": tuple(JobState),
}


class JobMachine:
    """A job's state and its phases' machines."""

    state: str
    # Bound by ``transitions``; declared here for type checkers.
    advance: Callable[[], bool]
    fail: Callable[[], bool]
    cancel: Callable[[], bool]
    _reopen: Callable[[], bool]

    def __init__(
        self,
        planned: Sequence[str],
        initial: JobState,
        statuses: Mapping[str, PhaseStatus] | None = None,
    ) -> None:
        self.planned = tuple(planned)
        statuses = statuses or {}
        self.done: set[str] = set()
        self.failed_phases: list[str] = []
        self.phases = {
            name: PhaseMachine.acquire(name, statuses.get(name, PENDING), self) for name in planned
        }
        self._machine = _job_machine(self.planned)
        self._machine.add_model(self, initial=initial.name)

    def release(self) -> None:
        """Detach from the shared machines once the job's task ends."""
        self._machine.remove_model(self)
        for phase in self.phases.values():
            phase.release()

    @property
    def current(self) -> JobState:
        return JobState[self.state]

    @property
    def finished(self) -> bool:
        return self.current in TERMINAL

    @property
    def current_done(self) -> bool:
        """Whether the phase the job is at is done (a condition of ``advance``)."""
        return self.state in self.done

    @property
    def has_failures(self) -> bool:
        return bool(self.failed_phases)

    def status(self, phase: str) -> PhaseStatus:
        return self.phases[phase].status

    def running(self) -> list[str]:
        return [name for name, phase in self.phases.items() if phase.status is RUNNING]

    def fire(self, phase: str, trigger: str) -> None:
        """Fire ``trigger`` on one phase's machine (MachineError when it is illegal)."""
        self.phases[phase].trigger(trigger)

    def finishes_with(self, phase: str) -> bool:
        """Whether ``phase`` done would leave nothing of the job to run."""
        return self.done | {phase} >= set(self.planned)

    def ready(self, running: Iterable[str] = ()) -> list[str]:
        """Phases whose needs are done (completed or failed) and that are not running."""
        busy = set(running) | self.done
        return [
            name
            for name in self.planned
            if name not in busy
            and all(need in self.done for need in PHASE_BY_NAME[name].needs if need in self.planned)
        ]

    def phase_done(self, phase: str, failed: bool = False) -> None:
        """A finished phase; ``settle`` then moves the job past it."""
        self.fire(phase, "fail" if failed else "complete")

    def settle(self) -> None:
        """Advance as far as the done phases allow."""
        while not self.finished and (self.current is JobState.PENDING or self.state in self.done):
            self.advance()

    def reopen(self) -> list[str]:
        """Resume: the phases left to run (and VERIFY, which checks them) become pending
        and the job goes back to its first phase left. Returns the phases reopened; none
        when nothing is left to run, and then nothing moves."""
        left = [name for name in self.planned if self.status(name) is not COMPLETED]
        if not left:
            return []
        reopened = [name for name in self.planned if name in left or self.phases[name].verifies]
        for name in reopened:
            self.fire(name, "reopen")
        self._reopen()
        self.settle()
        return reopened

    def _phase_entered(self, phase: str, status: PhaseStatus) -> None:
        if status in DONE_STATUSES:
            self.done.add(phase)
            if status is FAILED:
                self.failed_phases.append(phase)
        else:
            self.done.discard(phase)
            if phase in self.failed_phases:
                self.failed_phases.remove(phase)


@functools.cache
def _job_machine(planned: tuple[str, ...]) -> Machine:
    """The job machine of a plan, shared by every job with that plan (jobs are models)."""
    machine = Machine(
        model=None,
        states=[state.name for state in JobState],
        auto_transitions=False,
        send_event=True,
        initial=JobState.PENDING.name,
    )
    steps = [JobState.PENDING.name, *planned]
    machine.add_transition("advance", steps[0], steps[1])
    for source, dest in zip(steps[1:], steps[2:], strict=False):
        machine.add_transition("advance", source, dest, conditions="current_done")
    last = steps[-1]
    machine.add_transition(
        "advance", last, JobState.PARTIAL.name, conditions=["current_done", "has_failures"]
    )
    machine.add_transition("advance", last, JobState.COMPLETED.name, conditions="current_done")
    for trigger, end in (("fail", JobState.FAILED), ("cancel", JobState.CANCELLED)):
        machine.add_transition(trigger, [s.name for s in JOB_TRIGGERS[trigger]], end.name)
    machine.add_transition("_reopen", [s.name for s in JOB_TRIGGERS["reopen"]], "PENDING")
    return machine


class PhaseMachine:
    """The lifecycle of one phase of one job; its job (if any) keeps count of done phases.

    ``acquire`` hands out a machine at a given status, ``release`` takes it back: released
    machines stay added to the shared ``transitions`` machine and are reused, because
    adding a model (binding its triggers) costs each job twelve times over (in the
    benchmark's profile, 2.4% of the daemon's busy time without reuse)."""

    state: str
    trigger: Callable[[str], bool]
    _job: JobMachine | None
    _free: ClassVar[list[PhaseMachine]] = []

    def __init__(
        self, phase: str, initial: PhaseStatus = PENDING, job: JobMachine | None = None
    ) -> None:
        self._bind(phase, job)
        _PHASE_MACHINE.add_model(self, initial=initial.value)
        self._announce(initial)

    @classmethod
    def acquire(cls, phase: str, initial: PhaseStatus, job: JobMachine) -> PhaseMachine:
        if not cls._free:
            return cls(phase, initial, job)
        machine = cls._free.pop()
        machine._bind(phase, job)
        _PHASE_MACHINE.set_state(initial.value, model=machine)
        machine._announce(initial)
        return machine

    def release(self) -> None:
        self._job = None
        PhaseMachine._free.append(self)

    def _bind(self, phase: str, job: JobMachine | None) -> None:
        self.phase = phase
        self.verifies = PHASE_BY_NAME[phase].verifies
        self._job = job

    def _announce(self, status: PhaseStatus) -> None:
        if self._job is not None:
            self._job._phase_entered(self.phase, status)

    @property
    def status(self) -> PhaseStatus:
        return PhaseStatus(self.state)

    def _entered(self, event: EventData) -> None:
        self._announce(self.status)


_PHASE_MACHINE = Machine(
    model=None,
    states=[status.value for status in PhaseStatus],
    initial=PENDING.value,
    auto_transitions=False,
    send_event=True,
    after_state_change="_entered",
)
for _t in PHASE_TRANSITIONS:
    _PHASE_MACHINE.add_transition(
        _t.trigger,
        [s.value for s in _t.sources],
        _t.dest.value,
        conditions="verifies" if _t.only_verify else None,
    )
