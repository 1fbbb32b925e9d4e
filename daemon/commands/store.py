"""The commands that work on the store file, on the daemon's host: ``status``, ``resume``,
``cancel``, ``export`` and ``prune``."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from daemon.commands.common import (
    ConfigOption,
    JsonOption,
    cells,
    env,
    load,
    open_store,
    out,
    usage_error_on,
)
from daemon.contract import FileRecord
from daemon.errors import CodegendError, ConfigError, UsageError
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.store import Store


def status(
    job_id: Annotated[str | None, typer.Argument(help="One job; all jobs if omitted.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Jobs and their phases, from the store."""
    with closing(open_store(load(config))) as store:
        if job_id is not None:
            _print_job(store, job_id, as_json)
        elif as_json:
            print(json.dumps(store.jobs(), indent=1))
        else:
            table = Table("job", "project", "state")
            for row in store.jobs():
                table.add_row(*cells(row["job_id"], row["project_name"], row["state"]))
            out.print(table)


def _print_job(store: Store, job_id: str, as_json: bool) -> None:
    job = store.job(job_id)
    phases = store.phases(job_id)
    if as_json:
        document = {
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
        }
        print(json.dumps(document, indent=1))
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
            *cells(
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


def resume(
    job_id: Annotated[str | None, typer.Argument(help="The job to re-queue.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every failed and partial job.")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-queue failed, partial or interrupted jobs; only their unfinished phases run again."""
    from daemon.states import JobState

    if (job_id is None) == (not all_):
        raise UsageError("give a JOB_ID or --all")
    with closing(open_store(load(config))) as store:
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


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job to stop.")],
    config: ConfigOption = None,
) -> None:
    """Stop a job cleanly after its running phase; it ends cancelled."""
    with closing(open_store(load(config))) as store:
        store.request_cancel(job_id)
    out.print(f"{job_id}: cancel requested", markup=False, highlight=False)


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
            **env("FORCE"),
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Write a job's files from the store to DIR. Nothing below DIR is followed if it is a
    symlink; exits 1 if a file cannot be written, 2 if DIR is not empty (see --force)."""
    with closing(open_store(load(config))) as store:
        store.job(job_id)
        files = store.files(job_id)
    _check_export_target(directory, force)
    _write_export(directory, files)
    out.print(f"{len(files)} files written to {directory}", markup=False, highlight=False)


def _check_export_target(directory: Path, force: bool) -> None:
    """Refuse a DIR that holds anything, unless forced (exit 2: the command was wrong)."""
    try:
        occupied = directory.is_dir() and any(directory.iterdir())
    except OSError as exc:
        raise CodegendError(str(exc)) from None
    if occupied and not force:
        raise UsageError(f"{directory} is not empty; use --force to write into it")


def _write_export(directory: Path, files: list[FileRecord]) -> None:
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
        raise CodegendError(
            f"cannot write{current} to {directory}: {exc} ({written} of {len(files)} files written)"
        ) from None


def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Age of what is deleted: 30d, 12h, 90m, 45s, 2w (default: store.retention_days).",
            **env("PRUNE_OLDER_THAN"),
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would go.", **env("PRUNE_DRY_RUN"))
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Delete finished jobs (with their phases, files, calls) and published events older than
    the retention, in small transactions; nothing unpublished, no unfinished job."""
    from daemon.retention import prune as prune_store

    settings = load(config)
    age_s = _retention_s(older_than, settings)
    if age_s == 0 and older_than is None:
        out.print("store.retention_days is 0 (keep forever): nothing pruned; give --older-than")
        return
    with closing(open_store(settings)) as store:
        before = time.time() - age_s
        pruned = store.prunable(before) if dry_run else prune_store(store, before)
    verb = "would delete" if dry_run else "deleted"
    out.print(
        f"{verb} {pruned.jobs} finished jobs and {pruned.events} published events older than "
        f"{_age(age_s)} from {settings.store.path}",
        markup=False,
        highlight=False,
    )


def _retention_s(older_than: str | None, settings: Settings) -> float:
    """The age past which ``prune`` deletes: ``--older-than``, else ``store.retention_days``."""
    from daemon.retention import SECONDS_PER_DAY, parse_duration

    if older_than is None:
        return settings.store.retention_days * SECONDS_PER_DAY
    with usage_error_on(ConfigError, prefix="--older-than: "):
        return parse_duration(older_than)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
