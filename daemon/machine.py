"""The explicit state machines of a job, built with ``transitions`` from the phase registry.

A job has two levels of state, both checkpointed by the store:

- ``JobMachine``: the job's state, a member of ``JobState``: PENDING, then its *frontier*
  (the first planned phase not yet done), then a terminal state. ``advance`` moves to the
  new frontier once phases are done; run sequentially that is simply the next phase.
- ``PhaseMachine``: one per phase: pending → running → completed | failed, with
  interrupted (a clean stop) and back to pending (resume). Run in parallel, several
  phases of one job are running at once, each in its own machine.

The machines are pure: no callbacks with I/O. The job runner performs a phase, fires the
events its result calls for, and the store commits the new states together with the
phase's files and events. Restoring a job is building its machines at the stored states.
One ``transitions.Machine`` serves every job with the same plan (models are added and
removed), so a job costs no machine construction; phase machines are pooled and reused,
so a job costs no binding of triggers either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

from transitions import EventData, Machine

from daemon.states import PHASE_BY_STATE, TERMINAL, JobState

PHASE_STATES = ("pending", "running", "completed", "failed", "interrupted")
DONE = frozenset({"completed", "failed"})


class JobMachine:
    """Events: ``advance`` (to the frontier, or to the end), ``fail`` (a critical phase
    failed, or the job ran out of budget) and ``cancel``."""

    state: str
    # Bound by ``transitions``; declared here for type checkers.
    advance: Callable[[], bool]
    fail: Callable[[], bool]
    cancel: Callable[[], bool]

    def __init__(
        self,
        planned: Sequence[str],
        initial: JobState,
        statuses: Mapping[str, str] | None = None,
    ) -> None:
        self.planned = tuple(planned)
        statuses = statuses or {}
        self.phases = {
            name: PhaseMachine.acquire(name, statuses.get(name, "pending")) for name in planned
        }
        self.done = {name for name, phase in self.phases.items() if phase.state in DONE}
        self.failed_phases = [name for name in planned if statuses.get(name) == "failed"]
        self._machine = _job_machine(self.planned)
        self._machine.add_model(self, initial=initial.name)

    def release(self) -> None:
        """Detach from the shared machines once the job's task ends."""
        self._machine.remove_model(self)
        for phase in self.phases.values():
            phase.release()

    def running(self) -> list[str]:
        return [name for name, phase in self.phases.items() if phase.state == "running"]

    def start_phase(self, phase: str) -> None:
        self.phases[phase].start()

    def interrupt_phase(self, phase: str) -> None:
        self.phases[phase].interrupt()

    @property
    def current(self) -> JobState:
        return JobState[self.state]

    @property
    def finished(self) -> bool:
        return self.current in TERMINAL

    def frontier(self) -> str | None:
        return next((name for name in self.planned if name not in self.done), None)

    def ready(self, running: Iterable[str] = ()) -> list[str]:
        """Phases whose needs are done (completed or failed) and that are not running."""
        busy = set(running) | self.done
        return [
            name
            for name in self.planned
            if name not in busy
            and all(
                need in self.done for need in PHASE_BY_STATE[name].needs if need in self.planned
            )
        ]

    def phase_done(self, phase: str, failed: bool = False) -> None:
        """Record a finished phase; ``settle`` then moves the frontier past it."""
        if failed:
            self.phases[phase].fail()
            self.failed_phases.append(phase)
        else:
            self.phases[phase].complete()
        self.done.add(phase)

    def settle(self) -> None:
        """Advance if the frontier moved (a phase behind it may have finished first)."""
        if not self.finished and self.frontier() != self.state:
            self.advance()


def _frontier_is(dest: str | None) -> Callable[[EventData], bool]:
    return lambda event: event.model.frontier() == dest


def _has_failures(event: EventData) -> bool:
    return bool(event.model.failed_phases)


@functools.cache
def _job_machine(planned: tuple[str, ...]) -> Machine:
    sources = [JobState.PENDING.name, *planned]
    machine = Machine(
        model=None,
        states=[state.name for state in JobState],
        auto_transitions=False,
        send_event=True,
        initial=JobState.PENDING.name,
    )
    for index, source in enumerate(sources):
        for dest in planned[index:]:
            machine.add_transition("advance", source, dest, conditions=_frontier_is(dest))
        machine.add_transition(
            "advance", source, JobState.PARTIAL.name, conditions=[_frontier_is(None), _has_failures]
        )
        machine.add_transition(
            "advance", source, JobState.COMPLETED.name, conditions=_frontier_is(None)
        )
    machine.add_transition("fail", sources, JobState.FAILED.name)
    machine.add_transition("cancel", sources, JobState.CANCELLED.name)
    return machine


class PhaseMachine:
    """The lifecycle of one phase of one job.

    ``acquire`` hands out a machine at a given state, ``release`` takes it back: released
    machines stay added to the shared ``transitions`` machine and are reused, because
    adding a model (binding its triggers) and removing it (a scan of every model added)
    would otherwise cost each job eleven times over."""

    state: str
    start: Callable[[], bool]
    complete: Callable[[], bool]
    fail: Callable[[], bool]
    interrupt: Callable[[], bool]
    _free: ClassVar[list[PhaseMachine]] = []

    def __init__(self, phase: str, initial: str = "pending") -> None:
        self.phase = phase
        _PHASE_MACHINE.add_model(self, initial=initial)

    @classmethod
    def acquire(cls, phase: str, initial: str = "pending") -> PhaseMachine:
        if not cls._free:
            return cls(phase, initial)
        machine = cls._free.pop()
        machine.phase = phase
        _PHASE_MACHINE.set_state(initial, model=machine)
        return machine

    def release(self) -> None:
        PhaseMachine._free.append(self)


_PHASE_MACHINE = Machine(
    model=None, states=list(PHASE_STATES), initial="pending", auto_transitions=False
)
# running -> running: found running at start, its process died in it (a crash).
_PHASE_MACHINE.add_transition("start", ["pending", "interrupted", "running"], "running")
_PHASE_MACHINE.add_transition("complete", "running", "completed")
_PHASE_MACHINE.add_transition("fail", ["running", "pending", "interrupted"], "failed")
_PHASE_MACHINE.add_transition("interrupt", "running", "interrupted")
