"""The commands that work on the jobs: ``status``, ``resume``, ``cancel``, ``export`` and
``prune``. Outside cluster mode they work on the store file, on the daemon's host. In
cluster mode (docs/cluster-design.md section 5.2) ``cancel`` and ``resume`` send commands
to the daemon that owns the job's partition (``--local``: write this host's store, for a
partition it owns), and ``status`` and ``export`` read this host's store when it holds the
job's partition, else (or with ``--remote``) the cluster's replicated state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
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
    from daemon.command_records import Reply
    from daemon.store import Store

RemoteOption = Annotated[
    bool,
    typer.Option(
        "--remote",
        help="Cluster mode: read the cluster's replicated state (the changelog), not this "
        "host's store.",
    ),
]
LocalOption = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Cluster mode: write this host's store (for a job of a partition it owns) "
        "instead of sending the command to the job's owner.",
    ),
]
WaitOption = Annotated[
    float,
    typer.Option("--wait", help="Cluster mode: seconds to wait for the owner's answer.", min=0.0),
]
CLUSTER_MODE = (
    "cluster mode (kafka.changelog_topic set and a Kafka cluster in kafka.bootstrap_servers)"
)


def status(
    job_id: Annotated[str | None, typer.Argument(help="One job; all jobs if omitted.")] = None,
    as_json: JsonOption = False,
    remote: RemoteOption = False,
    config: ConfigOption = None,
) -> None:
    """Jobs and their phases, from the store (in cluster mode, from the cluster's
    replicated state when this host's store does not hold the job)."""
    with _view(load(config), job_id, remote) as store:
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
    all_: Annotated[
        bool, typer.Option("--all", help="Every failed, partial and cancelled job.")
    ] = False,
    local: LocalOption = False,
    wait: WaitOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Re-queue failed, partial or interrupted jobs; only their unfinished phases run again."""
    from daemon.command_records import RESUME, RESUME_ALL
    from daemon.states import JobState

    if (job_id is None) == (not all_):
        raise UsageError("give a JOB_ID or --all")
    settings = load(config)
    if settings.kafka.cluster_mode and not local:
        _send(settings, RESUME if job_id else RESUME_ALL, job_id, wait)
        return
    with closing(open_store(settings)) as store:
        if job_id:
            _check_writable(settings, store, job_id, "resume")
            ids = [job_id]
        else:
            states = [JobState.FAILED, JobState.PARTIAL, JobState.CANCELLED]
            ended = [row["job_id"] for row in store.jobs(states)]
            ids = [one for one in ended if _writable(settings, store, one)]
            if left := len(ended) - len(ids):
                out.print(
                    f"{left} jobs of partitions this store does not own left alone; "
                    "`codegend resume --all` without --local reaches them",
                    markup=False,
                    highlight=False,
                )
        for one in ids:
            phase = store.reopen(one, reason="codegend resume")
            done = f"{one}: resumes at {phase}" if phase else f"{one}: nothing left to run"
            out.print(done, markup=False, highlight=False)


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job to stop.")],
    local: LocalOption = False,
    wait: WaitOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Stop a job cleanly after its running phase; it ends cancelled."""
    from daemon.command_records import CANCEL

    settings = load(config)
    if settings.kafka.cluster_mode and not local:
        _send(settings, CANCEL, job_id, wait)
        return
    with closing(open_store(settings)) as store:
        _check_writable(settings, store, job_id, "cancel")
        store.request_cancel(job_id)
    out.print(f"{job_id}: cancel requested", markup=False, highlight=False)


def _send(settings: Settings, kind: str, job_id: str | None, wait_s: float) -> None:
    """Send the command to the partition of the job (``resume_all``: to every partition),
    print each reply; exit 1 if a reply says no or none came in ``wait_s``."""
    from daemon import remote
    from daemon.command_records import CANCEL, new_command

    kafka = settings.kafka
    reason = "codegend cancel" if kind == CANCEL else "codegend resume"
    if job_id is None:
        partitions = asyncio.run(remote.command_partitions(kafka))
    else:
        partitions = [remote.job_partition(settings, job_id)]
    commands = {p: new_command(kind, job_id, reason) for p in partitions}
    replies = asyncio.run(remote.send_commands(kafka, commands, wait_s))
    for reply in replies.values():
        if reply is not None and reply.ok:
            out.print(reply.message, markup=False, highlight=False)
    _raise_unanswered(kafka.commands_topic, replies, wait_s)


def _raise_unanswered(topic: str, replies: dict[int, Reply | None], wait_s: float) -> None:
    refused = [reply.message for reply in replies.values() if reply is not None and not reply.ok]
    silent = [p for p, reply in replies.items() if reply is None]
    problems = list(refused)
    if len(silent) == 1:
        problems.append(
            f"queued on {topic} partition {silent[0]}; no daemon answered in {wait_s:g} s; "
            "it applies when one owns the partition"
        )
    elif silent:
        problems.append(
            f"queued on {topic} partitions {', '.join(map(str, silent))}; no daemon answered "
            f"in {wait_s:g} s; each applies when one owns its partition"
        )
    if problems:
        raise CodegendError("; ".join(problems))


def _writable(settings: Settings, store: Store, job_id: str) -> bool:
    """Whether this host's store may be written for the job: outside cluster mode always;
    in cluster mode only for a job of a partition the store owns, since a restore erases
    the rest (a job it lacks: the store method says so)."""
    if not settings.kafka.cluster_mode:
        return True
    return store.partition_of_job(job_id) is None or _holds(store, job_id)


def _check_writable(settings: Settings, store: Store, job_id: str, command: str) -> None:
    if not _writable(settings, store, job_id):
        raise UsageError(
            f"{job_id} is a job of partition {store.partition_of_job(job_id)}, which this "
            f"store does not own; `codegend {command} {job_id}` without --local sends it to "
            "its owner"
        )


@contextmanager
def _view(settings: Settings, job_id: str | None, remote: bool) -> Iterator[Store]:
    """The store to read ``job_id`` (all jobs: None) from: this host's, unless in cluster
    mode it does not exist, does not hold the job's partition, or ``remote`` is asked for;
    then the cluster's replicated state, read into a throwaway store."""
    from daemon.remote import derived_partition, read_state

    kafka = settings.kafka
    if remote and not kafka.cluster_mode:
        raise UsageError(f"--remote needs {CLUSTER_MODE}")
    if not kafka.cluster_mode or (not remote and settings.store.path.exists()):
        with closing(open_store(settings)) as store:
            if job_id is None or not kafka.cluster_mode or _holds(store, job_id):
                yield store
                return
    derived = None if job_id is None else derived_partition(kafka, job_id)
    with read_state(settings, None if derived is None else [derived]) as state:
        yield state.store


def _holds(store: Store, job_id: str) -> bool:
    """Whether this store holds the job as its owner does: it has the job, of a partition
    it owns (or that it never owned in cluster mode: a store from before it)."""
    from daemon.store.partitions import OWNED

    partition = store.partition_of_job(job_id)
    if partition is None:
        return False
    record = store.partition_record(partition)
    return record is None or record.state == OWNED


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
    remote: RemoteOption = False,
    config: ConfigOption = None,
) -> None:
    """Write a job's files from the store (in cluster mode, from the cluster's replicated
    state when this host's store does not hold the job) to DIR. Nothing below DIR is
    followed if it is a symlink; exits 1 if a file cannot be written, 2 if DIR is not
    empty (see --force)."""
    with _view(load(config), job_id, remote) as store:
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
