"""The messages at the edges: what arrives on the requests topic and what leaves on the events topic.

These pydantic models are codegend's Kafka contract: the request and event messages and the
event types; the JSON Schema files and the AsyncAPI document under ``schemas/`` are generated
from them (``codegend schemas``) and a test fails if they drift apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from daemon.logs import printable
from daemon.states import PHASE_NAMES, ArchPlan

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# The job id of a request without a request_id: where it was read (topic:partition:offset).
# A request_id of this form could take the job id of a later request without one, so intake
# rejects it.
DERIVED_JOB_ID_PATTERN = r"^[A-Za-z0-9._-]+:[0-9]+:[0-9]+$"
REQUEST_ID_DESCRIPTION = (
    "The idempotency key and the job id: the same request_id never makes a second job. "
    "Without it the job id is where the message was read, topic:partition:offset, so a "
    "request_id of that form (name:digits:digits) is rejected (dead-lettered): it could "
    "take the job id of another request."
)
PROJECT_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
MAX_TOKENS_PER_CALL_LIMIT = 128_000


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextMockup(_Message):
    kind: Literal["text"]
    description: str = Field(min_length=1, max_length=100_000)
    notes: str | None = Field(default=None, max_length=20_000)


class ImageMockup(_Message):
    kind: Literal["image"]
    media_type: Literal["image/png", "image/jpeg", "image/webp", "image/gif"]
    data: str = Field(min_length=1, description="base64 of the image; its size is capped by config")
    notes: str | None = Field(default=None, max_length=20_000)

    @field_validator("data")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("data must be standard base64") from exc
        return value

    @property
    def size_bytes(self) -> int:
        return len(self.data) * 3 // 4 - self.data[-2:].count("=")


Mockup = Annotated[TextMockup | ImageMockup, Field(discriminator="kind")]


class Stack(_Message):
    backend: str = Field(default="fastapi", min_length=1, max_length=64)
    frontend: str = Field(default="react-vite", min_length=1, max_length=64)
    database: str = Field(default="postgresql", min_length=1, max_length=64)


class RequestOptions(_Message):
    max_tokens: dict[str, Annotated[int, Field(ge=256, le=MAX_TOKENS_PER_CALL_LIMIT)]] = Field(
        default_factory=dict, description="per-phase max_tokens overrides, keyed by phase state"
    )
    model: str | None = Field(default=None, min_length=1, max_length=128)
    phases: list[str] | None = Field(
        default=None, min_length=1, description="a subset of phases to run; ARCH always runs"
    )

    @field_validator("max_tokens")
    @classmethod
    def _known_budget_phases(cls, value: dict[str, int]) -> dict[str, int]:
        _check_phase_names(value)
        return value

    @field_validator("phases")
    @classmethod
    def _known_phases(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            _check_phase_names(value)
        return value


def _check_phase_names(names: Any) -> None:
    unknown = sorted(set(names) - set(PHASE_NAMES))
    if unknown:
        raise ValueError(f"unknown phase(s) {unknown}; known: {list(PHASE_NAMES)}")


class GenerationRequest(_Message):
    """A request to generate one project, as produced to the requests topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="GenerationRequest")

    request_id: str | None = Field(
        default=None, pattern=REQUEST_ID_PATTERN, description=REQUEST_ID_DESCRIPTION
    )
    project_name: str = Field(pattern=PROJECT_NAME_PATTERN)
    mockup: Mockup
    stack: Stack = Field(default_factory=Stack)
    options: RequestOptions = Field(default_factory=RequestOptions)


# ---------------------------------------------------------------------------
# Events

JobStatus = Literal["completed", "partial", "failed", "cancelled"]


class Usage(_Message):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    calls: int = 0
    cost_usd: float = Field(default=0.0, description="estimate from the llm.prices table")

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


class Verification(_Message):
    """What the VERIFY state found and fixed (in VERIFY's phase.completed and job.completed)."""

    tiers: list[str] = Field(description="the tiers run: static, toolchain")
    problems_before: int = Field(ge=0, description="problems found before any repair")
    problems_after: int = Field(ge=0, description="problems that remain")
    rounds: int = Field(ge=0, description="repair rounds run (verify.max_rounds at most)")
    repair_calls: int = Field(ge=0)
    builds: bool | None = Field(
        default=None,
        description="the toolchain tier's verdict: the frontend builds and the backend boots; "
        "null when that tier did not run",
    )
    remaining: list[str] = Field(description="each remaining problem, one line")
    toolchain_skipped: str | None = Field(
        default=None, description="why the toolchain tier did not run, if it was asked for"
    )


class FileRecord(_Message):
    path: str
    sha256: str
    size: int
    content: str


def _type_required(schema: dict[str, Any]) -> None:
    """An event's ``type`` has a default in code, but every event on the wire carries it."""
    schema["required"] = ["type", *schema.get("required", [])]


class _Envelope(_Message):
    """What every event carries, whatever its type; the store fills it in."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_type_required)

    event_id: str
    job_id: str
    request_id: str | None
    seq: int = Field(ge=1)
    ts: datetime

    def to_json(self) -> bytes:
        """The wire form: the envelope, then the fields of the event's type that are set;
        request_id always, null if none."""
        fields = self.model_dump(mode="json", exclude_none=True)
        fields.setdefault("request_id", None)
        ordered = {name: fields.pop(name) for name in _WIRE_ORDER if name in fields}
        return json.dumps({**ordered, **fields}, ensure_ascii=False, separators=(",", ":")).encode()


_WIRE_ORDER = ("event_id", "type", "job_id", "request_id", "seq", "ts")


class JobAccepted(_Message):
    """A request became a job: its project and the phases it runs."""

    type: Literal["job.accepted"] = "job.accepted"
    project_name: str
    phases: list[str]


class JobRejected(_Message):
    """A request was refused (dead-lettered, or not runnable): why."""

    type: Literal["job.rejected"] = "job.rejected"
    error: str


class PhaseStarted(_Message):
    type: Literal["phase.started"] = "phase.started"
    phase: str
    step: str
    attempt: int


class PhaseCompleted(_Message):
    """A phase committed: its files, usage and warnings; VERIFY's says what it found and
    fixed, ARCH's holds the architecture and the project's file plan."""

    type: Literal["phase.completed"] = "phase.completed"
    phase: str
    step: str
    files: list[FileRecord]
    usage: Usage
    duration_s: float
    warnings: list[str]
    verification: Verification | None = None
    plan: ArchPlan | None = None


class PhaseFailure(_Message):
    """What a phase.failed event says: the phase, its error and how often it was tried."""

    type: Literal["phase.failed"] = "phase.failed"
    phase: str
    step: str
    error: str
    attempts: int


class JobResumed(_Message):
    type: Literal["job.resumed"] = "job.resumed"
    from_phase: str
    reason: str


class JobCompleted(_Message):
    """A job ended: how, its files and usage, and (when it ran VERIFY) the verification."""

    type: Literal["job.completed"] = "job.completed"
    status: JobStatus
    files_total: int
    failed_phases: list[str]
    usage: Usage
    warnings: list[str] | None = None
    verification: Verification | None = None


# What an event says, by type: the store adds the envelope.
EventBody = (
    JobAccepted
    | JobRejected
    | PhaseStarted
    | PhaseCompleted
    | PhaseFailure
    | JobResumed
    | JobCompleted
)


class JobAcceptedEvent(_Envelope, JobAccepted):
    model_config = ConfigDict(title="JobAcceptedEvent")


class JobRejectedEvent(_Envelope, JobRejected):
    model_config = ConfigDict(title="JobRejectedEvent")


class PhaseStartedEvent(_Envelope, PhaseStarted):
    model_config = ConfigDict(title="PhaseStartedEvent")


class PhaseCompletedEvent(_Envelope, PhaseCompleted):
    model_config = ConfigDict(title="PhaseCompletedEvent")


class PhaseFailedEvent(_Envelope, PhaseFailure):
    model_config = ConfigDict(title="PhaseFailedEvent")


class JobResumedEvent(_Envelope, JobResumed):
    model_config = ConfigDict(title="JobResumedEvent")


class JobCompletedEvent(_Envelope, JobCompleted):
    model_config = ConfigDict(title="JobCompletedEvent")


Event = Annotated[
    JobAcceptedEvent
    | JobRejectedEvent
    | PhaseStartedEvent
    | PhaseCompletedEvent
    | PhaseFailedEvent
    | JobResumedEvent
    | JobCompletedEvent,
    Field(discriminator="type"),
]
"""One event on the events topic: the envelope, and the fields of its ``type``."""
EVENTS: TypeAdapter[Event] = TypeAdapter(Event)
BODIES: tuple[type[EventBody], ...] = get_args(EventBody)
# The fields each type of event must carry besides the envelope, by type, in the order of
# EventBody.
REQUIRED_BY_TYPE: dict[str, tuple[str, ...]] = {
    body.model_fields["type"].default: tuple(
        name for name, field in body.model_fields.items() if field.is_required()
    )
    for body in BODIES
}


def event_of(body: EventBody, **envelope: Any) -> Event:
    """The event that says ``body``, in the envelope the store gives it."""
    return EVENTS.validate_python({**envelope, **dict(body)})


def parse_event(data: str | bytes) -> Event:
    """An event from its wire form (ValidationError when it is not one)."""
    return EVENTS.validate_json(data)


def is_derived_job_id(request_id: str) -> bool:
    """Whether ``request_id`` has the form of a derived job id (``topic:partition:offset``)."""
    return re.match(DERIVED_JOB_ID_PATTERN, request_id) is not None


def field_errors(exc: ValidationError, root: str, limit: int | None = None) -> list[str]:
    """One ``location: message`` line per validation error (``root`` when it has none). The
    location may quote the input's own keys: each part is shortened, and control characters
    are escaped, so a line stays one line."""
    return [
        f"{'.'.join(_shown_part(part) for part in error['loc']) or root}: "
        f"{printable(_shortened(error['msg'], MAX_ERROR_MESSAGE_CHARS))}"
        for error in exc.errors(include_url=False, include_input=False)[:limit]
    ]


MAX_LOCATION_PART_CHARS = 80
MAX_ERROR_MESSAGE_CHARS = 500


def _shown_part(part: str | int) -> str:
    return printable(_shortened(str(part), MAX_LOCATION_PART_CHARS))


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def utc_now() -> datetime:
    return datetime.now(UTC)
