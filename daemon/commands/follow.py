"""``codegend submit`` and ``codegend watch``: the commands that talk to the brokers,
producing a request and following a job's events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError

from daemon.commands.common import (
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    PlainOption,
    env,
    load,
    out,
    show_error,
)
from daemon.commands.request import check_size, read_request
from daemon.contract import (
    Event,
    JobAcceptedEvent,
    JobCompletedEvent,
    JobRejectedEvent,
    JobResumedEvent,
    PhaseCompletedEvent,
    PhaseFailedEvent,
    PhaseStartedEvent,
    field_errors,
)
from daemon.errors import BrokerError

if TYPE_CHECKING:
    from daemon.client import Client

WatchMode = Literal["json", "plain", "live"]


def submit(
    file: Annotated[Path | None, typer.Argument(help="Request JSON file, or - for stdin.")] = None,
    project: Annotated[
        str | None,
        typer.Option(help="Project name (a slug), instead of a FILE.", **env("PROJECT")),
    ] = None,
    mockup_text: Annotated[
        str | None,
        typer.Option(help="Mockup description, instead of a FILE.", **env("MOCKUP_TEXT")),
    ] = None,
    mockup_image: Annotated[
        Path | None,
        typer.Option(
            help="Mockup image (PNG, JPEG, WebP, GIF), instead of a FILE.",
            dir_okay=False,
            **env("MOCKUP_IMAGE"),
        ),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(help="Idempotency key and job id (default: the file's).", **env("REQUEST_ID")),
    ] = None,
    watch_: Annotated[
        bool, typer.Option("--watch", help="Follow the job until it ends.", **env("WATCH"))
    ] = False,
    plain: PlainOption = False,
    config: ConfigOption = None,
) -> None:
    """Validate a generation request and produce it to the requests topic; prints the job id.

    With --watch, follows the job and exits as watch does."""
    from daemon.client import Client

    settings = load(config)
    try:
        request = read_request(file, project, mockup_text, mockup_image, request_id)
    except ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in field_errors(exc, "request"))
        show_error(f"\n{lines}", label="invalid request:")
        raise typer.Exit(EXIT_USAGE) from None
    check_size(request, settings)

    async def go() -> int:
        async with Client(settings) as client:
            job_id = await client.submit(request)
            out.print(job_id, highlight=False, markup=False)
            return await follow_job(client, job_id, watch_mode(False, plain)) if watch_ else 0

    raise typer.Exit(run_client(go))


def watch(
    job_id: Annotated[
        str | None, typer.Argument(help="The job to follow; all jobs if omitted.")
    ] = None,
    as_json: JsonOption = False,
    plain: PlainOption = False,
    config: ConfigOption = None,
) -> None:
    """Follow events: a live view of each job's phases on a terminal, else one line per event.

    With a JOB_ID, exits when the job ends: 0 completed, 1 failed (or rejected), 2 partial,
    3 cancelled."""
    from daemon.client import Client

    settings = load(config)
    mode = watch_mode(as_json, plain)

    async def go() -> int:
        async with Client(settings) as client:
            return await follow_job(client, job_id, mode)

    raise typer.Exit(run_client(go))


def run_client(go: Callable[[], Coroutine[None, None, int]]) -> int:
    """Run a broker client's coroutine to its exit code; the brokers' failures are a
    `BrokerError`."""
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(go())
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"the brokers could not be used: {exc!r}") from None


def watch_mode(as_json: bool, plain: bool) -> WatchMode:
    if as_json:
        return "json"
    return "plain" if plain or not out.is_terminal else "live"


async def follow_job(client: Client, job_id: str | None, mode: WatchMode) -> int:
    """Follow a job (or every job): the live view, one line per event, or JSON lines.
    Returns the exit code of how the job ended."""
    from daemon.watchview import WatchState, follow, show_live

    state = WatchState(job_id)
    events = client.events(job_id)
    if mode == "live":
        await show_live(events, state, out)
    elif mode == "json":
        await follow(events, state, lambda e: print(e.to_json().decode(), flush=True))
    else:
        await follow(
            events,
            state,
            lambda e: out.print(describe(e), highlight=False, markup=False, soft_wrap=True),
        )
    return state.exit_code()


def describe(event: Event) -> str:
    """One readable line for an event."""
    detail = _detail(event)
    return f"{event.ts:%H:%M:%S} {event.job_id} #{event.seq:<3} {event.type:<16} {detail}"


def _detail(event: Event) -> str:
    """What an event of its type says, in a few words."""
    match event:
        case JobAcceptedEvent():
            return f"{event.project_name}: {len(event.phases)} phases"
        case JobRejectedEvent():
            return event.error
        case PhaseStartedEvent():
            return f"{event.phase} (step {event.step}, attempt {event.attempt})"
        case PhaseCompletedEvent():
            return (
                f"{event.phase}: {len(event.files)} files, {event.usage.output_tokens} output "
                f"tokens, {event.duration_s:.1f} s"
            )
        case PhaseFailedEvent():
            return f"{event.phase}: {event.error}"
        case JobResumedEvent():
            return f"from {event.from_phase} ({event.reason})"
        case JobCompletedEvent():
            failed = f", failed: {', '.join(event.failed_phases)}" if event.failed_phases else ""
            return f"{event.status}: {event.files_total} files{failed}"
