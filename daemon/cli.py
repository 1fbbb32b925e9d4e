"""The ``codegend`` command line: parse, set up logging and settings, hand over."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from daemon import __version__
from daemon.errors import CodegendError
from daemon.logs import LogFormat, setup_logging
from daemon.models import Event, GenerationRequest
from daemon.settings import Settings, load_settings

app = typer.Typer(
    name="codegend",
    help="Turn a UI mockup into a full-stack code base through a durable chain of Claude calls.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="CODEGEND_CONFIG",
        show_envvar=True,
        help="TOML file overlaying config/default.toml.",
        dir_okay=False,
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="CODEGEND_LOG_FORMAT",
        show_envvar=True,
        help="text (the readable step log) or json (one object per line).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", envvar="CODEGEND_JSON", show_envvar=True, help="Print JSON.")
]
EXIT_BY_STATUS = {"completed": 0, "failed": 1, "partial": 2, "cancelled": 3}


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except CodegendError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _log_format(value: str) -> LogFormat:
    if value not in ("text", "json"):
        err.print(f"[red]error:[/] --log-format must be text or json, not {value!r}")
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@app.command()
def run(
    config: ConfigOption = None,
    log_format: LogFormatOption = "text",
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            envvar="CODEGEND_RECORD",
            show_envvar=True,
            file_okay=False,
            help="Record every model answer into this cassette directory.",
        ),
    ] = None,
) -> None:
    """Run the daemon: consume requests, run jobs, publish events; SIGTERM/SIGINT stop it cleanly."""
    from daemon.worker import Daemon

    setup_logging(_log_format(log_format))
    settings = _settings(config)
    try:
        asyncio.run(Daemon(settings, record_dir=record).run())
    except CodegendError as exc:
        raise _fail(exc) from None


def _read_request(
    file: Path | None, project: str | None, mockup_text: str | None, mockup_image: Path | None
) -> GenerationRequest:
    if file is not None:
        raw: Any = json.loads(
            sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        )
    elif project and (mockup_text or mockup_image):
        if mockup_image is not None:
            media = {
                ".png": "image/png",
                ".jpg": "image/jpeg",
                ".jpeg": "image/jpeg",
                ".webp": "image/webp",
                ".gif": "image/gif",
            }.get(mockup_image.suffix.lower(), "image/png")
            mockup = {
                "kind": "image",
                "media_type": media,
                "data": base64.b64encode(mockup_image.read_bytes()).decode(),
            }
        else:
            mockup = {"kind": "text", "description": mockup_text}
        raw = {"project_name": project, "mockup": mockup}
    else:
        raise CodegendError(
            "give a request FILE (or - for stdin), or --project with --mockup-text or --mockup-image"
        )
    return GenerationRequest.model_validate(raw)


@app.command()
def submit(
    file: Annotated[Path | None, typer.Argument(help="Request JSON file, or - for stdin.")] = None,
    project: Annotated[
        str | None, typer.Option(help="Project name (a slug), instead of a FILE.")
    ] = None,
    mockup_text: Annotated[
        str | None, typer.Option(help="Mockup description, instead of a FILE.")
    ] = None,
    mockup_image: Annotated[
        Path | None, typer.Option(help="Mockup image file, instead of a FILE.")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key (default: from the file).")
    ] = None,
    watch_: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    config: ConfigOption = None,
) -> None:
    """Validate a generation request and produce it to the requests topic; prints the job id."""
    from daemon.client import Client

    settings = _settings(config)
    try:
        request = _read_request(file, project, mockup_text, mockup_image)
        if request_id:
            request = request.model_copy(update={"request_id": request_id})
            request = GenerationRequest.model_validate(request.model_dump())
    except ValidationError as exc:
        err.print(f"[red]invalid request:[/]\n{exc}")
        raise typer.Exit(2) from None
    except (CodegendError, OSError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    async def go() -> int:
        async with Client(settings) as client:
            job_id = await client.submit(request)
            out.print(job_id)
            return await _follow(client, job_id, as_json=False) if watch_ else 0

    try:
        raise typer.Exit(asyncio.run(go()))
    except CodegendError as exc:
        raise _fail(exc) from None


def describe(event: Event) -> str:
    """One readable line for an event."""
    detail = {
        "job.accepted": lambda e: f"{e.project_name}: {len(e.phases or [])} phases",
        "job.rejected": lambda e: e.error,
        "phase.started": lambda e: f"{e.phase} (step {e.step}, attempt {e.attempt})",
        "phase.completed": lambda e: (
            f"{e.phase}: {len(e.files or [])} files, {e.usage.output_tokens if e.usage else 0} output "
            f"tokens, {e.duration_s:.1f} s"
        ),
        "phase.failed": lambda e: f"{e.phase}: {e.error}",
        "job.resumed": lambda e: f"from {e.from_phase} ({e.reason})",
        "job.completed": lambda e: (
            f"{e.status}: {e.files_total} files"
            + (f", failed: {', '.join(e.failed_phases)}" if e.failed_phases else "")
        ),
    }[event.type](event)
    return f"{event.ts:%H:%M:%S} {event.job_id} #{event.seq:<3} {event.type:<16} {detail}"


async def _follow(client: Any, job_id: str | None, as_json: bool) -> int:
    status = None
    async for event in client.events(job_id):
        if as_json:
            print(event.to_json().decode(), flush=True)
        else:
            out.print(describe(event), highlight=False, markup=False)
        if event.type == "job.completed" and event.job_id == job_id:
            status = event.status
    return EXIT_BY_STATUS.get(status or "completed", 0)


@app.command()
def watch(
    job_id: Annotated[
        str | None, typer.Argument(help="The job to follow; all jobs if omitted.")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Follow events (one line each); with a JOB_ID, exits when the job ends (0 completed,
    1 failed, 2 partial, 3 cancelled)."""
    from daemon.client import Client

    settings = _settings(config)

    async def go() -> int:
        async with Client(settings) as client:
            return await _follow(client, job_id, as_json)

    try:
        raise typer.Exit(asyncio.run(go()))
    except CodegendError as exc:
        raise _fail(exc) from None


def _open_store(settings: Settings) -> Any:
    from daemon.store import Store

    if not settings.store.path.exists():
        raise _fail(CodegendError(f"no store at {settings.store.path}"))
    try:
        return Store(settings.store.path)
    except CodegendError as exc:
        raise _fail(exc) from None


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="One job; all jobs if omitted.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Jobs and their phases, from the store."""
    store = _open_store(_settings(config))
    try:
        if job_id is None:
            rows = store.jobs()
            if as_json:
                print(json.dumps(rows, indent=1))
                return
            table = Table("job", "project", "state")
            for row in rows:
                table.add_row(row["job_id"], row["project_name"], row["state"])
            out.print(table)
            return
        _print_job(store, job_id, as_json)
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()


def _print_job(store: Any, job_id: str, as_json: bool) -> None:
    job = store.job(job_id)
    phases = store.phases(job_id)
    if as_json:
        print(
            json.dumps(
                {
                    "job_id": job.job_id,
                    "state": job.state.name,
                    "planned": job.planned,
                    "phases": [
                        {
                            "phase": p.phase,
                            "status": p.status,
                            "attempts": p.attempts,
                            "usage": p.usage.model_dump(),
                            "duration_s": p.duration_s,
                            "error": p.error,
                            "files": len(store.files(job_id, p.phase)),
                        }
                        for p in phases
                    ],
                },
                indent=1,
            )
        )
        return
    table = Table(
        "phase",
        "status",
        "attempts",
        "calls",
        "files",
        "in tok",
        "out tok",
        "s",
        "error",
        title=f"{job.job_id}: {job.state.name}",
    )
    for p in phases:
        table.add_row(
            p.phase,
            p.status,
            str(p.attempts),
            str(p.usage.calls),
            str(len(store.files(job_id, p.phase))),
            str(p.usage.input_tokens),
            str(p.usage.output_tokens),
            f"{p.duration_s or 0:.1f}",
            p.error or "",
        )
    out.print(table)


@app.command()
def resume(
    job_id: Annotated[str | None, typer.Argument(help="The job to re-queue.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every failed and partial job.")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-queue failed, partial or interrupted jobs; only their unfinished phases run again."""
    from daemon.states import JobState

    if (job_id is None) == (not all_):
        err.print("[red]error:[/] give a JOB_ID or --all")
        raise typer.Exit(2)
    store = _open_store(_settings(config))
    try:
        ids = (
            [job_id]
            if job_id
            else [
                row["job_id"]
                for row in store.jobs([JobState.FAILED, JobState.PARTIAL, JobState.CANCELLED])
            ]
        )
        for one in ids:
            phase = store.reopen(one, reason="codegend resume")
            out.print(f"{one}: resumes at {phase}" if phase else f"{one}: nothing left to run")
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job to stop.")],
    config: ConfigOption = None,
) -> None:
    """Stop a job cleanly after its running phase; it ends cancelled."""
    store = _open_store(_settings(config))
    try:
        store.request_cancel(job_id)
        out.print(f"{job_id}: cancel requested")
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()


@app.command()
def export(
    job_id: Annotated[str, typer.Argument(help="The job whose files to write.")],
    directory: Annotated[Path, typer.Argument(help="Where to write them.", file_okay=False)],
    config: ConfigOption = None,
) -> None:
    """Write a job's files from the store to DIR."""
    from daemon.paths import write_file

    store = _open_store(_settings(config))
    try:
        files = store.files(job_id)
        store.job(job_id)
        for record in files:
            write_file(directory, record.path, record.content)
        out.print(f"{len(files)} files written to {directory}")
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()


@app.command("config")
def show_config(config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets masked)."""
    settings = _settings(config)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))


@app.command()
def demo(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            envvar="CODEGEND_OUTPUT__DIR",
            show_envvar=True,
            help="Where the generated project goes.",
        ),
    ] = Path("out"),
    log_format: LogFormatOption = "text",
) -> None:
    """The whole flow offline: embedded broker, daemon, the sample request, files in out/."""
    from daemon.demo import run_demo

    setup_logging(_log_format(log_format))
    try:
        raise typer.Exit(asyncio.run(run_demo(output)))
    except CodegendError as exc:
        raise _fail(exc) from None


@app.command()
def schemas(
    directory: Annotated[Path, typer.Argument(file_okay=False)] = Path("schemas"),
) -> None:
    """Write the JSON Schema files of the messages (generated from the pydantic models)."""
    from daemon.contract import write_schemas

    for path in write_schemas(directory):
        out.print(f"wrote {path}")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    app()
