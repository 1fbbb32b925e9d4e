"""The phase registry: every phase of a job is data, so a new phase is a new entry.

The order of ``PHASES`` is the order of the explicit state machine. ``JobState`` (where a
job is) and ``PhaseStatus`` (where each of its phases is) are the enums shared by the
machines, the store and the events.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from daemon.states.architecture import ARCHITECTURE_PHASES
from daemon.states.backend import BACKEND_PHASES
from daemon.states.base import ArchPlan, Phase, PhaseFiles, StepGroup
from daemon.states.deployment import DEPLOYMENT_PHASES
from daemon.states.frontend import FRONTEND_PHASES
from daemon.states.verification import VERIFICATION_PHASES

PHASES: tuple[Phase, ...] = (
    *ARCHITECTURE_PHASES,
    *BACKEND_PHASES,
    *FRONTEND_PHASES,
    *DEPLOYMENT_PHASES,
    *VERIFICATION_PHASES,
)
PHASE_BY_NAME: dict[str, Phase] = {phase.name: phase for phase in PHASES}
PHASE_NAMES: tuple[str, ...] = tuple(phase.name for phase in PHASES)
# The phases that write the project's files (the file plan assigns each file to one).
FILE_PHASE_NAMES: tuple[str, ...] = tuple(p.name for p in PHASES if p.writes_planned_files)


class JobState(enum.Enum):
    """Where a job is: waiting, at one of the phases, or finished."""

    PENDING = "PENDING"
    ARCH = "ARCH"
    DB = "DB"
    BE_CORE = "BE_CORE"
    BE_MODELS = "BE_MODELS"
    BE_ROUTES = "BE_ROUTES"
    BE_UTILS = "BE_UTILS"
    FE_SETUP = "FE_SETUP"
    FE_CORE = "FE_CORE"
    FE_PAGES = "FE_PAGES"
    FE_COMPONENTS = "FE_COMPONENTS"
    CONFIG = "CONFIG"
    VERIFY = "VERIFY"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def phase(self) -> Phase | None:
        return PHASE_BY_NAME.get(self.name)


TERMINAL = frozenset({JobState.COMPLETED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED})


class PhaseStatus(enum.StrEnum):
    """Where one phase of a job is; stored and shown as its value."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped on purpose, put aside, or its process died in it


DONE_STATUSES = frozenset({PhaseStatus.COMPLETED, PhaseStatus.FAILED})
UNFINISHED_STATUSES = frozenset(PhaseStatus) - DONE_STATUSES

if tuple(s.name for s in JobState)[1:-4] != PHASE_NAMES:  # pragma: no cover - import-time guard
    raise RuntimeError("JobState must list the phases in registry order")


def plan_phases(selected: Iterable[str] | None, verify: bool = True) -> list[str]:
    """The phases a job runs, in machine order; ARCH always runs because every phase needs
    it, and VERIFY (unless ``verify`` is off) checks whatever the others wrote."""
    wanted = set(selected or PHASE_NAMES) | {"ARCH"}
    if verify:
        wanted.add("VERIFY")
    else:
        wanted.discard("VERIFY")
    return [name for name in PHASE_NAMES if name in wanted]


def needs_closure(state: str) -> frozenset[str]:
    """Every phase ``state`` builds on, directly or through the phases it needs."""
    found: set[str] = set()
    pending = list(PHASE_BY_NAME[state].needs)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(PHASE_BY_NAME[name].needs)
    return frozenset(found)


__all__ = [
    "DONE_STATUSES",
    "FILE_PHASE_NAMES",
    "UNFINISHED_STATUSES",
    "needs_closure",
    "PHASES",
    "PHASE_BY_NAME",
    "PHASE_NAMES",
    "TERMINAL",
    "ArchPlan",
    "JobState",
    "PhaseStatus",
    "Phase",
    "PhaseFiles",
    "StepGroup",
    "plan_phases",
]
