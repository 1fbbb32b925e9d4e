"""The explicit state machine of a job, built with ``transitions`` from the phase registry.

States are the members of ``JobState``: PENDING, the phases, and the terminal states.
The machine is pure: no callbacks, no I/O. The job runner performs a phase, fires the
event that its result calls for, and the store commits the machine's new state together
with the phase's files and events. Restoring a job is building its machine at the
stored state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transitions import Machine

from daemon.states import TERMINAL, JobState


class JobMachine:
    """One job's machine. Events: ``advance`` (to the next planned phase, or to the end),
    ``fail`` (a critical phase failed) and ``cancel``."""

    state: str
    # Bound by ``transitions`` at construction; declared here for type checkers.
    advance: Callable[[], bool]
    fail: Callable[[], bool]
    cancel: Callable[[], bool]

    def __init__(
        self, planned: Sequence[str], initial: JobState, failed_phases: Sequence[str] = ()
    ) -> None:
        self.failed_phases = list(failed_phases)
        chain = [JobState.PENDING.name, *planned]
        self.machine = Machine(
            model=self,
            states=[state.name for state in JobState],
            initial=initial.name,
            auto_transitions=False,
            queued=False,
        )
        for source, dest in zip(chain, chain[1:], strict=False):
            self.machine.add_transition("advance", source, dest)
        self.machine.add_transition(
            "advance", chain[-1], JobState.PARTIAL.name, conditions="has_failures"
        )
        self.machine.add_transition("advance", chain[-1], JobState.COMPLETED.name)
        self.machine.add_transition("fail", chain, JobState.FAILED.name)
        self.machine.add_transition("cancel", chain, JobState.CANCELLED.name)

    @property
    def current(self) -> JobState:
        return JobState[self.state]

    @property
    def finished(self) -> bool:
        return self.current in TERMINAL

    def has_failures(self) -> bool:
        return bool(self.failed_phases)

    def phase_failed(self, phase: str) -> None:
        """Record a failed non-critical phase; the next ``advance`` goes on past it."""
        self.failed_phases.append(phase)
