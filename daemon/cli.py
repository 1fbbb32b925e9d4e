"""The ``codegend`` command line: parse, set up logging and settings, hand over."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from daemon import __version__
from daemon.errors import CodegendError
from daemon.logs import LogFormat, setup_logging
from daemon.models import IMAGE_MEDIA_TYPES, Event, GenerationRequest, ImageMockup, field_errors
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
PlainOption = Annotated[
    bool,
    typer.Option(
        "--plain",
        envvar="CODEGEND_PLAIN",
        show_envvar=True,
        help="One line per event instead of the live view (the default when not on a terminal).",
    ),
]


def _error(message: object, label: str = "error:") -> None:
    """One error on stderr, unwrapped and taken literally (no rich markup in it)."""
    text = str(message)
    separator = "" if text.startswith("\n") else " "
    err.print(Text.assemble((label, "red"), separator, text), soft_wrap=True, highlight=False)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except CodegendError as exc:
        _error(exc)
        raise typer.Exit(2) from None


def _log_format(value: str) -> LogFormat:
    if value not in ("text", "json"):
        _error(f"--log-format must be text or json, not {value!r}")
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


def _fail(exc: Exception) -> typer.Exit:
    _error(exc)
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
    ready_file: Annotated[
        Path | None,
        typer.Option(
            "--ready-file",
            envvar="CODEGEND_READY_FILE",
            show_envvar=True,
            dir_okay=False,
            help="Once intake runs, write this file (the pid and the metrics URL, as JSON); "
            "removed when the daemon stops.",
        ),
    ] = None,
) -> None:
    """Run the daemon: consume requests, run jobs, publish events; SIGTERM/SIGINT stop it cleanly."""
    from daemon.worker import Daemon

    setup_logging(_log_format(log_format))
    settings = _settings(config)
    _require_model_credentials(settings)
    try:
        asyncio.run(Daemon(settings, record_dir=record, ready_file=ready_file).run())
    except CodegendError as exc:
        raise _fail(exc) from None


NO_CREDENTIALS = (
    "no Anthropic API key: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the daemon's "
    'environment, or set llm.provider = "replay" to answer from a cassette'
)


def _require_model_credentials(settings: Settings) -> None:
    """Stop at once, exit 2, when the SDK would find no credentials: otherwise every job
    would die at its first call. The replay provider needs none."""
    if settings.llm.provider == "replay":
        return
    problem = _missing_model_credentials()
    if problem is not None:
        _error(problem)
        raise typer.Exit(2)


def _missing_model_credentials() -> str | None:
    """Why the Anthropic SDK could not authenticate, or None. The SDK resolves credentials
    itself (ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, a profile), so ask it rather than
    second-guess it; no value it finds is ever shown."""
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return None
    import anthropic

    try:
        client = anthropic.Anthropic(max_retries=0)
    except Exception as exc:  # a profile the SDK was told to use and cannot load
        return f"the Anthropic SDK cannot load its credentials ({type(exc).__name__}); {NO_CREDENTIALS}"
    try:
        found = client.api_key or client.auth_token or client.credentials is not None
    finally:
        client.close()
    return None if found else NO_CREDENTIALS


IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class UsageError(CodegendError):
    """The command was not given what it needs."""


def _read_request(
    file: Path | None,
    project: str | None,
    mockup_text: str | None,
    mockup_image: Path | None,
    request_id: str | None,
) -> GenerationRequest:
    flags = [
        name
        for name, value in (
            ("--project", project),
            ("--mockup-text", mockup_text),
            ("--mockup-image", mockup_image),
        )
        if value is not None
    ]
    if file is not None and flags:
        raise UsageError(f"give a request FILE or {' / '.join(flags)}, not both")
    if file is not None:
        raw = _load_json(file)
    elif project is not None and (mockup_text is None) != (mockup_image is None):
        mockup = (
            _image_mockup(mockup_image)
            if mockup_image is not None
            else {"kind": "text", "description": mockup_text}
        )
        raw = {"project_name": project, "mockup": mockup}
    elif mockup_text is not None and mockup_image is not None:
        raise UsageError("give --mockup-text or --mockup-image, not both")
    else:
        raise UsageError(
            "give a request FILE (or - for stdin), or --project with --mockup-text or --mockup-image"
        )
    if request_id is not None and isinstance(raw, dict):
        raw = {**raw, "request_id": request_id}
    return GenerationRequest.model_validate(raw)


def _load_json(file: Path) -> Any:
    name = "stdin" if str(file) == "-" else str(file)
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no request file at {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {name}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}") from None


def _image_mockup(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no image file at {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return {"kind": "image", "media_type": _media_type(path, data), "data": _b64(data)}


def _media_type(path: Path, data: bytes) -> str:
    """The type the image's first bytes declare (its name may lie)."""
    for signature, media_type in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise UsageError(
        f"{path} is not a PNG, JPEG, WebP or GIF image (the types a mockup may have: "
        f"{', '.join(IMAGE_MEDIA_TYPES)})"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _field_errors(exc: ValidationError) -> str:
    return "\n".join(f"  {line}" for line in field_errors(exc, "request"))


def _check_size(request: GenerationRequest, settings: Settings) -> None:
    mockup = request.mockup
    limit = settings.llm.max_image_bytes
    if isinstance(mockup, ImageMockup) and mockup.size_bytes > limit:
        raise UsageError(
            f"the mockup image has {mockup.size_bytes} bytes, over llm.max_image_bytes ({limit})"
        )


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"CODEGEND_{name}", "show_envvar": True}


@app.command()
def submit(
    file: Annotated[Path | None, typer.Argument(help="Request JSON file, or - for stdin.")] = None,
    project: Annotated[
        str | None,
        typer.Option(help="Project name (a slug), instead of a FILE.", **_env("PROJECT")),
    ] = None,
    mockup_text: Annotated[
        str | None,
        typer.Option(help="Mockup description, instead of a FILE.", **_env("MOCKUP_TEXT")),
    ] = None,
    mockup_image: Annotated[
        Path | None,
        typer.Option(
            help="Mockup image (PNG, JPEG, WebP, GIF), instead of a FILE.",
            dir_okay=False,
            **_env("MOCKUP_IMAGE"),
        ),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key and job id (default: the file's).", **_env("REQUEST_ID")
        ),
    ] = None,
    watch_: Annotated[
        bool, typer.Option("--watch", help="Follow the job until it ends.", **_env("WATCH"))
    ] = False,
    plain: PlainOption = False,
    config: ConfigOption = None,
) -> None:
    """Validate a generation request and produce it to the requests topic; prints the job id.

    With --watch, follows the job and exits as watch does."""
    from daemon.client import Client

    settings = _settings(config)
    try:
        request = _read_request(file, project, mockup_text, mockup_image, request_id)
        _check_size(request, settings)
    except ValidationError as exc:
        _error(f"\n{_field_errors(exc)}", label="invalid request:")
        raise typer.Exit(2) from None
    except UsageError as exc:
        _error(exc)
        raise typer.Exit(2) from None

    async def go() -> int:
        async with Client(settings) as client:
            job_id = await client.submit(request)
            out.print(job_id, highlight=False, markup=False)
            return await _follow(client, job_id, _watch_mode(False, plain)) if watch_ else 0

    raise typer.Exit(_run_client(go))


def _run_client(go: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a broker client's coroutine; its failures become one line and exit code 1."""
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130
    except CodegendError as exc:
        raise _fail(exc) from None
    except (KafkaError, OSError) as exc:
        raise _fail(CodegendError(f"the brokers could not be used: {exc!r}")) from None


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


WatchMode = Literal["json", "plain", "live"]


def _watch_mode(as_json: bool, plain: bool) -> WatchMode:
    if as_json:
        return "json"
    return "plain" if plain or not out.is_terminal else "live"


async def _follow(client: Any, job_id: str | None, mode: WatchMode) -> int:
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


@app.command()
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

    settings = _settings(config)
    mode = _watch_mode(as_json, plain)

    async def go() -> int:
        async with Client(settings) as client:
            return await _follow(client, job_id, mode)

    raise typer.Exit(_run_client(go))


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
                table.add_row(*_cells(row["job_id"], row["project_name"], row["state"]))
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
        title=Text(f"{job.job_id}: {job.state.name}"),
    )
    for p in phases:
        table.add_row(
            *_cells(
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
        _error("give a JOB_ID or --all")
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
            done = f"{one}: resumes at {phase}" if phase else f"{one}: nothing left to run"
            out.print(done, markup=False, highlight=False)
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
        out.print(f"{job_id}: cancel requested", markup=False, highlight=False)
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()


@app.command()
def export(
    job_id: Annotated[str, typer.Argument(help="The job whose files to write.")],
    directory: Annotated[
        Path,
        typer.Argument(help="Where to write them: a new or empty folder.", file_okay=False),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write into DIR even if it is not empty; files there with a job file's "
            "name are replaced (a link there is replaced, never written through).",
            **_env("FORCE"),
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Write a job's files from the store to DIR. Nothing below DIR is followed if it is a
    symlink; exits 1 if a file cannot be written, 2 if DIR is not empty (see --force)."""
    store = _open_store(_settings(config))
    try:
        store.job(job_id)
        files = store.files(job_id)
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    _export_target(directory, force)
    _write_export(directory, files)
    out.print(f"{len(files)} files written to {directory}", markup=False, highlight=False)


def _export_target(directory: Path, force: bool) -> None:
    """Refuse a DIR that holds anything, unless forced (exit 2: the command was wrong)."""
    try:
        occupied = directory.is_dir() and any(directory.iterdir())
    except OSError as exc:
        raise _fail(exc) from None
    if occupied and not force:
        _error(f"{directory} is not empty; use --force to write into it")
        raise typer.Exit(2)


def _write_export(directory: Path, files: list[Any]) -> None:
    """Write ``files`` through :class:`daemon.paths.Tree`; the first failure ends it (exit 1)."""
    from daemon.paths import Tree

    written, current = 0, ""
    try:
        with Tree(directory) as tree:
            for record in files:
                current = f" {record.path!r}"
                tree.write(record.path, record.content)
                written += 1
    except (OSError, CodegendError, UnicodeError) as exc:
        _error(
            f"cannot write{current} to {directory}: {exc} ({written} of {len(files)} files written)"
        )
        raise typer.Exit(1) from None


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Age of what is deleted: 30d, 12h, 90m, 45s, 2w (default: store.retention_days).",
            **_env("PRUNE_OLDER_THAN"),
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would go.", **_env("PRUNE_DRY_RUN"))
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Delete finished jobs (with their phases, files, calls) and published events older than
    the retention, in small transactions; nothing unpublished, no unfinished job."""
    import time

    from daemon.retention import SECONDS_PER_DAY, parse_duration
    from daemon.retention import prune as prune_store

    settings = _settings(config)
    try:
        age_s = (
            parse_duration(older_than)
            if older_than is not None
            else settings.store.retention_days * SECONDS_PER_DAY
        )
    except CodegendError as exc:
        _error(f"--older-than: {exc}")
        raise typer.Exit(2) from None
    if age_s == 0 and older_than is None:
        out.print("store.retention_days is 0 (keep forever): nothing pruned; give --older-than")
        return
    store = _open_store(settings)
    try:
        before = time.time() - age_s
        pruned = store.prunable(before) if dry_run else prune_store(store, before)
    except CodegendError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    verb = "would delete" if dry_run else "deleted"
    out.print(
        f"{verb} {pruned.jobs} finished jobs and {pruned.events} published events older than "
        f"{_age(age_s)} from {settings.store.path}",
        markup=False,
        highlight=False,
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@app.command("config")
def show_config(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Print the effective configuration: each key's value and where it comes from
    (default, file, environment); secrets are masked."""
    from daemon.settings import describe_settings

    try:
        entries = describe_settings(config)
    except CodegendError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    if as_json:
        document = {e.key: {"value": e.value, "source": e.source} for e in entries}
        print(json.dumps(document, indent=2))
        return
    table = Table("key", "value", "source", title="codegend configuration")
    for entry in entries:
        style = "" if entry.source == "default" else "bold"
        table.add_row(*_cells(entry.key, _config_value(entry.value), entry.source), style=style)
    out.print(table, highlight=False)
    if config is not None:
        out.print(f"file: {config}", highlight=False, markup=False)
    api_key = "set" if os.environ.get("ANTHROPIC_API_KEY") else "not set"
    out.print(f"ANTHROPIC_API_KEY: {api_key} (read by the Anthropic SDK itself)", highlight=False)


def _cells(*values: str) -> list[Text]:
    """Table cells taken literally: a string from the store, the model or a setting may
    hold rich markup (``[/x]`` would make rich raise)."""
    return [Text(value) for value in values]


def _config_value(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


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
    example: Annotated[
        str,
        typer.Option(
            "--example",
            help="The example to run: a request in examples/ with its cassette.",
        ),
    ] = "car-management-app",
) -> None:
    """The whole flow offline: embedded broker, daemon, an example request, files in out/."""
    from daemon.demo import example_names, run_demo

    names = example_names()
    if example not in names:
        _error(f"no example {example!r}; the examples are: {', '.join(names)}")
        raise typer.Exit(2)
    setup_logging(_log_format(log_format))
    try:
        raise typer.Exit(asyncio.run(run_demo(output, example)))
    except CodegendError as exc:
        raise _fail(exc) from None


@app.command()
def schemas(
    directory: Annotated[Path, typer.Argument(file_okay=False)] = Path("schemas"),
) -> None:
    """Write the JSON Schema files of the messages and the AsyncAPI document of the topics
    (generated from the pydantic models)."""
    from daemon import asyncapi
    from daemon.contract import write_schemas

    for path in write_schemas(directory):
        out.print(f"wrote {path}", highlight=False, markup=False)
    try:
        out.print(f"wrote {asyncapi.write(directory)}", highlight=False, markup=False)
    except ImportError:
        raise _fail(CodegendError("asyncapi.yaml needs PyYAML: pip install -e '.[test]'")) from None


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    app()
