"""The live view of ``codegend watch``: a state folded from events, drawn by a pure function.

``WatchState.apply`` takes the events of the events topic one by one (a repeated event is
ignored) and ``render(state, now)`` draws every job as a rich renderable: its phases with
their state, files, output tokens and time, and a progress bar. The clock is an argument,
so a scripted event stream and a fixed ``now`` always give the same screen; ``show_live``
is the only part that waits on the broker and the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from daemon.contract import (
    Event,
    JobAcceptedEvent,
    JobCompletedEvent,
    JobRejectedEvent,
    JobResumedEvent,
    PhaseCompletedEvent,
    PhaseFailedEvent,
    PhaseStartedEvent,
    Usage,
    utc_now,
)
from daemon.states import PHASE_BY_NAME, PHASE_NAMES

PhaseStatus = Literal["waiting", "running", "done", "failed"]
JobStatus = Literal["running", "completed", "partial", "failed", "cancelled", "rejected"]
EXIT_BY_STATUS: dict[str, int] = {
    "completed": 0,
    "failed": 1,
    "rejected": 1,
    "partial": 2,
    "cancelled": 3,
}
REFRESH_S = 0.125
PROGRESS_BAR_WIDTH = 40
NOTE_WIDTH = 48
_SPINNER = Spinner("dots")
_JOB_STYLE = {
    "running": "cyan",
    "completed": "green",
    "partial": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "rejected": "red",
}


@dataclass
class PhaseView:
    """What the events said about one phase of a job."""

    name: str
    step: str
    status: PhaseStatus = "waiting"
    attempt: int = 0
    started_at: datetime | None = None
    files: int = 0
    output_tokens: int = 0
    duration_s: float | None = None
    warnings: int = 0
    error: str | None = None

    def elapsed_s(self, now: datetime) -> float | None:
        if self.status == "running" and self.started_at is not None:
            return _seconds(self.started_at, now)
        return self.duration_s


@dataclass
class JobView:
    """What the events said about one job."""

    job_id: str
    project_name: str | None = None
    phases: dict[str, PhaseView] = field(default_factory=dict)
    status: JobStatus = "running"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    files_total: int | None = None
    usage: Usage | None = None
    last_seq: int = 0

    def plan(self, names: list[str]) -> None:
        """Lay out the planned phases in machine order, keeping what is known of each."""
        for name in names:
            self.phase(name)
        order = {name: index for index, name in enumerate(PHASE_NAMES)}
        self.phases = dict(sorted(self.phases.items(), key=lambda item: order.get(item[0], 99)))

    def phase(self, name: str) -> PhaseView:
        if name not in self.phases:
            known = PHASE_BY_NAME.get(name)
            self.phases[name] = PhaseView(name, known.step if known else "?")
        return self.phases[name]

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def settled(self) -> int:
        """Phases that are done or failed."""
        return sum(p.status in ("done", "failed") for p in self.phases.values())

    @property
    def files(self) -> int:
        return sum(p.files for p in self.phases.values())

    @property
    def output_tokens(self) -> int:
        return sum(p.output_tokens for p in self.phases.values())

    def elapsed_s(self, now: datetime) -> float:
        if self.started_at is None:
            return 0.0
        return _seconds(self.started_at, self.ended_at or now)


class WatchState:
    """Every job seen on the events topic (or the one job watched), folded from its events."""

    def __init__(self, job_id: str | None = None) -> None:
        self.job_id = job_id
        self.jobs: dict[str, JobView] = {}

    def apply(self, event: Event) -> bool:
        """Fold one event in; False (and no change) if it is another job's or a repeat."""
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        job = self.jobs.get(event.job_id)
        if job is None:
            job = self.jobs[event.job_id] = JobView(event.job_id)
            job.plan(list(PHASE_NAMES))
        # A re-published event repeats its event_id and its seq: seq alone tells it apart.
        if event.seq <= job.last_seq:
            return False
        job.last_seq = event.seq
        if job.started_at is None:
            job.started_at = event.ts
        _fold(job, event)
        return True

    @property
    def done(self) -> bool:
        """The watched job has ended (never, when watching every job)."""
        job = self.jobs.get(self.job_id) if self.job_id is not None else None
        return job is not None and job.finished

    def exit_code(self) -> int:
        """0 completed, 1 failed (or rejected), 2 partial, 3 cancelled; 0 while unknown."""
        job = self.jobs.get(self.job_id) if self.job_id is not None else None
        return EXIT_BY_STATUS.get(job.status, 0) if job is not None else 0


def _accepted(job: JobView, event: JobAcceptedEvent) -> None:
    job.project_name = event.project_name
    planned = event.phases or list(PHASE_NAMES)
    job.phases = {
        name: phase
        for name, phase in job.phases.items()
        if name in planned or phase.status != "waiting"
    }
    job.plan(planned)


def _phase_started(job: JobView, event: PhaseStartedEvent) -> None:
    phase = job.phase(event.phase)
    phase.status, phase.attempt, phase.started_at = "running", event.attempt, event.ts
    phase.error = None


def _phase_completed(job: JobView, event: PhaseCompletedEvent) -> None:
    phase = job.phase(event.phase)
    phase.status, phase.duration_s, phase.error = "done", event.duration_s, None
    phase.files = len(event.files)
    phase.output_tokens = event.usage.output_tokens
    phase.warnings = len(event.warnings)


def _phase_failed(job: JobView, event: PhaseFailedEvent) -> None:
    phase = job.phase(event.phase)
    if phase.started_at is not None:
        phase.duration_s = _seconds(phase.started_at, event.ts)
    phase.status, phase.error = "failed", event.error
    phase.attempt = event.attempts or phase.attempt


def _completed(job: JobView, event: JobCompletedEvent) -> None:
    job.status = event.status
    job.ended_at, job.files_total, job.usage = event.ts, event.files_total, event.usage
    for phase in job.phases.values():
        if phase.status == "running":  # cancelled mid-phase: it did not finish
            phase.status = "waiting"


def _fold(job: JobView, event: Event) -> None:
    """What one event changes in its job's view."""
    match event:
        case JobAcceptedEvent():
            _accepted(job, event)
        case JobRejectedEvent():
            job.status, job.error, job.ended_at = "rejected", event.error, event.ts
        case PhaseStartedEvent():
            _phase_started(job, event)
        case PhaseCompletedEvent():
            _phase_completed(job, event)
        case PhaseFailedEvent():
            _phase_failed(job, event)
        case JobResumedEvent():
            job.status, job.ended_at = "running", None
        case JobCompletedEvent():
            _completed(job, event)


# ---------------------------------------------------------------------------
# Rendering


def render(state: WatchState, now: datetime) -> RenderableType:
    """The whole screen at ``now``: one panel per job; in the all-jobs view a finished job
    folds to its header and progress bar."""
    if not state.jobs:
        waiting = f"waiting for events of {state.job_id}" if state.job_id else "waiting for events"
        return Text(f"{waiting}…", style="dim")
    single = state.job_id is not None
    return Group(
        *(render_job(job, now, compact=not single and job.finished) for job in state.jobs.values())
    )


def render_job(job: JobView, now: datetime, compact: bool = False) -> RenderableType:
    style = _JOB_STYLE[job.status]
    title = Text.assemble(
        (job.job_id, "bold"),
        (f" · {job.project_name}" if job.project_name else "", ""),
        " · ",
        (job.status, style),
    )
    parts: list[RenderableType] = [_progress(job, now)]
    if job.error:
        parts.append(Text(job.error, style="red"))
    if not compact and job.status != "rejected":
        parts.append(_phase_table(job, now))
    return Panel(
        Group(*parts),
        title=title,
        title_align="left",
        border_style=style,
        expand=False,
    )


def _progress(job: JobView, now: datetime) -> RenderableType:
    bar = ProgressBar(
        total=max(len(job.phases), 1),
        completed=job.settled,
        finished_style="red" if job.status in ("failed", "rejected") else "bar.finished",
    )
    line = Table.grid(padding=(0, 1))
    line.add_column(min_width=10, max_width=PROGRESS_BAR_WIDTH)
    line.add_column(no_wrap=True, overflow="ellipsis")
    line.add_row(
        bar,
        Text(
            f"{job.settled}/{len(job.phases)} phases · {_clock(job.elapsed_s(now))} · "
            f"{job.files} files · {job.output_tokens:,} output tokens"
        ),
    )
    return line


def _phase_table(job: JobView, now: datetime) -> Table:
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold dim")
    table.add_column("step", no_wrap=True)
    table.add_column("phase", no_wrap=True, min_width=max(map(len, PHASE_NAMES)))
    table.add_column("state", no_wrap=True, min_width=len("⠋ running"))
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("out tok", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    # The only column that gives way on a narrow screen.
    table.add_column("", max_width=NOTE_WIDTH, overflow="ellipsis")
    for phase in job.phases.values():
        settled = phase.status in ("done", "failed")
        elapsed = phase.elapsed_s(now)
        table.add_row(
            Text(phase.step),  # strings from the topic are never rich markup
            Text(phase.name),
            _state_cell(phase, now),
            str(phase.files) if phase.status == "done" else "",
            f"{phase.output_tokens:,}" if phase.status == "done" else "",
            f"{elapsed:.1f} s"
            if elapsed is not None and (settled or phase.status == "running")
            else "",
            _note(phase),
        )
    return table


def _state_cell(phase: PhaseView, now: datetime) -> Text:
    if phase.status == "running":
        return Text(f"{spinner_frame(phase, now)} running", style="cyan")
    return {
        "waiting": Text("· waiting", style="dim"),
        "done": Text("✓ done", style="green"),
        "failed": Text("✗ failed", style="red"),
    }[phase.status]


def spinner_frame(phase: PhaseView, now: datetime) -> str:
    """The spinner's frame, from how long the phase has run: the clock turns it."""
    elapsed_ms = (phase.elapsed_s(now) or 0.0) * 1000
    frames = _SPINNER.frames
    return frames[int(elapsed_ms / _SPINNER.interval) % len(frames)]


def _note(phase: PhaseView) -> Text:
    text, style = "", ""
    if phase.status == "failed":
        text, style = phase.error or "", "red"
    elif phase.status == "running" and phase.attempt > 1:
        text, style = f"attempt {phase.attempt}", "yellow"
    elif phase.status == "done" and phase.warnings:
        text, style = f"{phase.warnings} warning{'s' if phase.warnings > 1 else ''}", "yellow"
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _seconds(start: datetime, end: datetime) -> float:
    # The watcher's clock may trail the daemon's: never show a negative time.
    return max((end - start).total_seconds(), 0.0)


# ---------------------------------------------------------------------------
# Following


async def follow(
    events: AsyncGenerator[Event, None], state: WatchState, on_event: Callable[[Event], None]
) -> None:
    """Fold events into ``state`` (calling ``on_event`` for each new one) until the watched
    job ends or the stream does."""
    async with contextlib.aclosing(events):
        async for event in events:
            if state.apply(event):
                on_event(event)
            if state.done:
                return


async def show_live(
    events: AsyncGenerator[Event, None], state: WatchState, console: Console
) -> None:
    """Follow events while redrawing the screen every ``REFRESH_S`` (the spinners turn)."""
    pump = asyncio.create_task(follow(events, state, lambda _: None))
    try:
        with Live(
            render(state, utc_now()), console=console, auto_refresh=False, redirect_stderr=False
        ) as live:
            while not pump.done():
                await asyncio.wait({pump}, timeout=REFRESH_S)
                live.update(render(state, utc_now()), refresh=True)
        await pump
    finally:
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
