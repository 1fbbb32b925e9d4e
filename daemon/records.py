"""The records a job's run produces and reads: the job as stored, a phase's outcome ready
to commit, a file ready to commit, and one model call."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from daemon.contract import FileRecord, GenerationRequest, Usage, Verification
from daemon.states import ArchPlan, JobState


@dataclass(eq=False)
class JobRecord:
    """A job as the store holds it; the machine is rebuilt from ``state``."""

    job_id: str
    request_id: str | None
    request: GenerationRequest
    state: JobState
    planned: list[str]
    plan: ArchPlan | None
    failed_phases: list[str] = field(default_factory=list)
    cancel_requested: bool = False


@dataclass(frozen=True)
class NewFile:
    path: str
    content: str

    def record(self) -> FileRecord:
        data = self.content.encode()
        return FileRecord(
            path=self.path,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            content=self.content,
        )


@dataclass(frozen=True)
class CallRecord:
    job_id: str
    phase: str
    call: int
    model: str
    max_tokens: int
    stop_reason: str | None
    error: str | None
    usage: Usage
    started_at: float
    duration_s: float


@dataclass
class PhaseOutcome:
    """What running one phase produced, ready to be committed."""

    phase: str
    step: str
    files: list[NewFile] = field(default_factory=list)
    plan: ArchPlan | None = None
    usage: Usage = field(default_factory=Usage)
    duration_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    verification: Verification | None = None
