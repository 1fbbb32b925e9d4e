"""Events of one job, numbered and timed as the daemon does: scripted event by event, or a
whole two-phase job ending in a given status; and the watch view drawn on a recorded console."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from daemon.contract import EVENTS, Event, FileRecord, Usage
from daemon.states import PHASE_NAMES
from daemon.watchview import WatchState, render

T0 = datetime(2026, 12, 1, 15, 30, 0, tzinfo=UTC)


class Script:
    """Events of one job, numbered as the daemon numbers them."""

    def __init__(self, job_id: str = "shop-1") -> None:
        self.job_id = job_id
        self.seq = 0

    def __call__(self, type_: str, at_s: float, **fields) -> Event:
        self.seq += 1
        return make_event(
            event_id=uuid.uuid4().hex,
            type=type_,
            job_id=self.job_id,
            request_id=self.job_id,
            seq=self.seq,
            ts=T0 + timedelta(seconds=at_s),
            **fields,
        )

    def accepted(self, phases=PHASE_NAMES) -> Event:
        return self("job.accepted", 0, project_name="shop", phases=list(phases))

    def started(self, phase: str, at_s: float, attempt: int = 1) -> Event:
        return self("phase.started", at_s, phase=phase, step="?", attempt=attempt)

    def completed(self, phase: str, at_s: float, files: int, tokens: int, **extra) -> Event:
        return self(
            "phase.completed",
            at_s,
            phase=phase,
            step="?",
            files=[_file(i) for i in range(files)],
            usage=Usage(output_tokens=tokens, calls=1),
            duration_s=extra.pop("duration_s", 2.0),
            warnings=extra.pop("warnings", []),
        )

    def failed(self, phase: str, at_s: float, error: str) -> Event:
        return self("phase.failed", at_s, phase=phase, step="?", error=error, attempts=3)

    def ended(self, status: str, at_s: float, failed=()) -> Event:
        return self(
            "job.completed",
            at_s,
            status=status,
            files_total=0,
            failed_phases=list(failed),
            usage=Usage(),
        )


def _file(index: int) -> FileRecord:
    return FileRecord(path=f"backend/f{index}.py", sha256="0" * 64, size=1, content="x")


def job_events(job_id: str, status: str) -> list[Event]:
    """A two-phase job that ends ``status``; DB fails unless it completes."""
    fields = [
        ("job.accepted", {"project_name": "shop", "phases": ["ARCH", "DB"]}),
        ("phase.started", {"phase": "ARCH", "step": "1", "attempt": 1}),
        (
            "phase.completed",
            {
                "phase": "ARCH",
                "step": "1",
                "files": [FileRecord(path="a.md", sha256="0" * 64, size=1, content="x")],
                "usage": Usage(output_tokens=1630, calls=1),
                "duration_s": 6.1,
                "warnings": [],
            },
        ),
        ("phase.started", {"phase": "DB", "step": "2", "attempt": 1}),
    ]
    if status == "completed":
        fields.append(
            (
                "phase.completed",
                {
                    "phase": "DB",
                    "step": "2",
                    "files": [],
                    "usage": Usage(output_tokens=900, calls=1),
                    "duration_s": 3.0,
                    "warnings": [],
                },
            )
        )
    elif status != "cancelled":
        fields.append(
            ("phase.failed", {"phase": "DB", "step": "2", "error": "boom", "attempts": 3})
        )
    failed = [] if status in ("completed", "cancelled") else ["DB"]
    fields.append(
        (
            "job.completed",
            {"status": status, "files_total": 1, "failed_phases": failed, "usage": Usage()},
        )
    )
    return [
        make_event(
            event_id=uuid.uuid4().hex,
            type=kind,
            job_id=job_id,
            request_id=job_id,
            seq=seq,
            ts=T0 + timedelta(seconds=seq),
            **values,
        )
        for seq, (kind, values) in enumerate(fields, start=1)
    ]


def screen(state: WatchState, at_s: float, width: int = 100) -> str:
    console = Console(record=True, width=width, color_system=None, file=_Null())
    console.print(render(state, T0 + timedelta(seconds=at_s)))
    return console.export_text()


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def make_event(**fields: Any) -> Event:
    """An event of any type from its fields, validated as the events topic's are."""
    return EVENTS.validate_python(fields)
