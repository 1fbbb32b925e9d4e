"""The store: SQLite through sqlite-utils, in WAL mode. The only module that knows the schema.

Every state change of a job and the events announcing it are written in one
transaction (the transactional outbox): there is no moment where one exists without
the other. One connection, used from the event loop's thread; each write is a short
transaction, so no call blocks the loop for long.

Commits are group commits: each transaction is in the write-ahead log when it returns,
so it survives a killed process, and :meth:`Store.sync` makes everything committed so far
survive power loss too, with one fsync. The daemon syncs before anything leaves the
process: before the relay publishes events and before intake commits Kafka offsets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.errors import IllegalMove, JobNotFound, StoreError, StoreFull
from daemon.machine import JOB_TRIGGERS, JobMachine, phase_dest, phase_sources
from daemon.models import Event, FileRecord, GenerationRequest, Usage, Verification, utc_now
from daemon.progress import Point
from daemon.states import PHASE_NAMES, ArchPlan, JobState, PhaseStatus

SCHEMA_VERSION = 7
BUSY_TIMEOUT_MS = 10_000
USAGE_COLUMNS = tuple(name for name in Usage.model_fields)
_TOKEN_COLUMNS = tuple(name for name in USAGE_COLUMNS if name != "cost_usd")
_TERMINAL_NAMES = tuple(state.name for state in JobState if state.is_terminal)
_UNFINISHED = f"state NOT IN ({','.join('?' * len(_TERMINAL_NAMES))})"
_NOT_NEWEST = "id < (SELECT max(id) FROM outbox)"
_PRUNABLE_EVENT = f"published_at IS NOT NULL AND published_at < ? AND {_NOT_NEWEST}"
_PRUNABLE_JOB = (
    f"state IN ({','.join('?' * len(_TERMINAL_NAMES))}) AND updated_at < ? AND NOT EXISTS "
    "(SELECT 1 FROM outbox WHERE outbox.job_id = jobs.job_id AND published_at IS NULL)"
)
_INSERT_CALL = (
    "INSERT INTO calls (job_id, phase, call, model, max_tokens, stop_reason, error, "
    "input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, "
    "cost_usd, started_at, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UPSERT_FILE = (
    "INSERT INTO files (job_id, path, phase, content, sha256, size, committed_at) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(job_id, path) DO UPDATE SET phase = excluded.phase, "
    "content = excluded.content, sha256 = excluded.sha256, size = excluded.size"
)


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
class PhaseRecord:
    phase: str
    status: PhaseStatus
    attempts: int
    usage: Usage
    duration_s: float | None
    error: str | None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    job_id: str
    type: str
    payload: bytes


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


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full: SQLITE_FULL from SQLite, or
    ENOSPC / EDQUOT from the operating system."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Store:
    """All reads and writes of codegend's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending_calls: list[tuple[object, ...]] = []
        self._unsynced = False
        self.synced_outbox_id = 0  # outbox rows up to this id are on disk (see sync)
        _create_private(path)
        conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self.db = sqlite_utils.Database(conn)
        try:
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"store {path} is not a usable SQLite database: {exc}") from None

    # -- setup -------------------------------------------------------------

    def _configure(self) -> None:
        conn = self.db.conn
        if self.db.journal_mode != "wal":
            self.db.enable_wal()
        # NORMAL: a commit is in the WAL (a killed process loses nothing) without waiting
        # for the disk; sync() is the fsync that makes it survive power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise StoreError(f"store {self.path} is corrupt: {result}")

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one version per transaction."""
        version = self.db.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this codegend "
                f"({SCHEMA_VERSION}); upgrade codegend"
            )
        migrations = {
            1: self._create_v1,
            2: self._add_interruptions,
            3: self._add_file_times,
            4: self._add_calls_and_costs,
            5: self._add_sync_points,
            6: self._add_death_points,
            7: self._add_verification,
        }
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.db.atomic():
                migrations[target]()
                self.db.conn.execute(f"PRAGMA user_version = {target}")

    def _create_v1(self) -> None:
        db = self.db
        db["jobs"].create(
            {
                "job_id": str,
                "request_id": str,
                "project_name": str,
                "request": str,
                "source": str,
                "state": str,
                "planned": str,
                "plan": str,
                "cancel_requested": int,
                "created_at": float,
                "updated_at": float,
            },
            pk="job_id",
        )
        db["phases"].create(
            {
                "job_id": str,
                "phase": str,
                "status": str,
                "attempts": int,
                **{name: int for name in _TOKEN_COLUMNS},
                "started_at": float,
                "finished_at": float,
                "duration_s": float,
                "error": str,
                "warnings": str,
            },
            pk=("job_id", "phase"),
            not_null={"attempts", *_TOKEN_COLUMNS},
            defaults={"attempts": 0, **{name: 0 for name in _TOKEN_COLUMNS}},
            foreign_keys=[("job_id", "jobs", "job_id")],
        )
        db["files"].create(
            {"job_id": str, "path": str, "phase": str, "content": str, "sha256": str, "size": int},
            pk=("job_id", "path"),
            foreign_keys=[("job_id", "jobs", "job_id")],
        )
        db["sequences"].create({"job_id": str, "last_seq": int}, pk="job_id")
        db["outbox"].create(
            {
                "id": int,
                "event_id": str,
                "job_id": str,
                "seq": int,
                "type": str,
                "payload": bytes,
                "created_at": float,
                "published_at": float,
            },
            pk="id",
        )
        db["outbox"].create_index(["published_at", "id"])
        db["outbox"].create_index(["job_id", "seq"], unique=True)
        db["jobs"].create_index(["state", "created_at"])

    def _add_calls_and_costs(self) -> None:
        db = self.db
        db["phases"].add_column("cost_usd", float, not_null_default=0.0)
        # A job waiting out a long retry-after is not picked up before this time.
        db["jobs"].add_column("not_before", float)
        db["calls"].create(
            {
                "id": int,
                "job_id": str,
                "phase": str,
                "call": int,
                "model": str,
                "max_tokens": int,
                "stop_reason": str,
                "error": str,
                **{name: int for name in _TOKEN_COLUMNS if name != "calls"},
                "cost_usd": float,
                "started_at": float,
                "duration_s": float,
            },
            pk="id",
        )
        db["calls"].create_index(["job_id", "phase"])

    def _add_sync_points(self) -> None:
        # One row: when the store was last synced and the outbox rows that covered.
        self.db["sync_points"].create({"id": int, "at": float, "outbox_id": int}, pk="id")

    def _add_death_points(self) -> None:
        phases = self.db["phases"]
        # Where the phase was when a process last died in it, how many files it had then,
        # and how many deaths in a row came at that same point (see daemon.progress).
        for name in ("death_call", "death_stage", "death_chars", "death_files"):
            phases.add_column(name, int)
        phases.add_column("deaths_in_a_row", int, not_null_default=0)
        # Why a job is put aside until the next start or its not_before (model access).
        self.db["jobs"].add_column("held", str)
        # The ids of pruned jobs: a request redelivered after its job was pruned is still a
        # duplicate, never a second job.
        self.db["pruned_jobs"].create({"job_id": str, "pruned_at": float}, pk="job_id")

    def _add_verification(self) -> None:
        # VERIFY's summary (models.Verification as JSON), repeated in job.completed.
        self.db["jobs"].add_column("verification", str)

    def _add_file_times(self) -> None:
        # When a file was first committed (a re-run of its phase keeps the first time).
        self.db["files"].add_column("committed_at", float)

    def _add_interruptions(self) -> None:
        # How often a phase was left running by a process that died in it.
        self.db["phases"].add_column("interruptions", int, not_null_default=0)

    def close(self) -> None:
        self.flush()
        self.sync()
        self.db.close()

    def flush(self) -> None:
        """Write what waits for the next transaction (call records) now."""
        if self._pending_calls:
            with self.transaction():
                pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction, committed to the write-ahead log (see :meth:`sync`). When the
        disk is full SQLite rolls it back whole and this raises StoreFull: nothing of it
        was written (the call records it would have written wait for the next one)."""
        written: list[tuple[object, ...]] = []
        try:
            with self.db.atomic():
                yield
                written = list(self._pending_calls)
                self._write_calls()
        except (sqlite3.Error, OSError) as exc:
            if written and not self._pending_calls:
                self._pending_calls[:0] = written  # the COMMIT failed after they were written
            if disk_full(exc):
                raise StoreFull(f"store {self.path}: disk full ({exc})") from exc
            raise
        self._unsynced = True

    def sync(self, force: bool = False) -> int:
        """Make every commit so far durable, power loss included, and return the last
        outbox row that this covers. One commit with ``synchronous = FULL`` fsyncs the
        write-ahead log, and with it every earlier commit of every connection to this
        file (``force``: also when this connection wrote nothing since, for rows that
        other processes committed)."""
        if not (self._unsynced or force):
            return self.synced_outbox_id
        conn = self.db.conn
        conn.execute("PRAGMA synchronous = FULL")
        try:
            with self.db.atomic():
                (covered,) = conn.execute(
                    "INSERT INTO sync_points (id, at, outbox_id) "
                    "VALUES (1, ?, (SELECT coalesce(max(id), 0) FROM outbox)) "
                    "ON CONFLICT(id) DO UPDATE SET at = excluded.at, outbox_id = excluded.outbox_id "
                    "RETURNING outbox_id",
                    (time.time(),),
                ).fetchone()
                self._write_calls()
        except (sqlite3.Error, OSError) as exc:
            if disk_full(exc):
                raise StoreFull(f"store {self.path}: disk full ({exc})") from exc
            raise
        finally:
            conn.execute("PRAGMA synchronous = NORMAL")
        self._unsynced = False
        self.synced_outbox_id = covered
        return covered

    # -- events ------------------------------------------------------------

    def _emit(self, job_id: str, request_id: str | None, type_: str, **fields: Any) -> Event:
        """Append an event to the outbox; call inside a transaction."""
        row = self.db.conn.execute(
            "INSERT INTO sequences (job_id, last_seq) VALUES (?, 1) "
            "ON CONFLICT(job_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
            (job_id,),
        ).fetchone()
        event = Event(
            event_id=uuid.uuid4().hex,
            type=type_,
            job_id=job_id,
            request_id=request_id,  # type: ignore[arg-type]
            seq=row[0],
            ts=utc_now(),
            **fields,
        )
        self.db.conn.execute(
            "INSERT INTO outbox (event_id, job_id, seq, type, payload, created_at) VALUES (?,?,?,?,?,?)",
            (event.event_id, job_id, event.seq, type_, event.to_json(), time.time()),
        )
        return event

    def emit(self, job_id: str, request_id: str | None, type_: str, **fields: Any) -> Event:
        with self.transaction():
            return self._emit(job_id, request_id, type_, **fields)

    def unpublished(self, limit: int, skip_jobs: Iterable[str] = ()) -> list[OutboxRow]:
        """The oldest unpublished rows, but none of the jobs in ``skip_jobs`` (whose events
        wait behind one the broker refused)."""
        skipped = list(skip_jobs)
        rows = self.db.conn.execute(
            "SELECT id, job_id, type, payload FROM outbox WHERE published_at IS NULL "
            f"AND job_id NOT IN ({','.join('?' * len(skipped))}) ORDER BY id LIMIT ?",
            (*skipped, limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def unpublished_events(self, type_: str) -> Iterator[Event]:
        """The committed events of one type that are not published yet, oldest first."""
        cursor = self.db.conn.execute(
            "SELECT payload FROM outbox WHERE published_at IS NULL AND type = ? ORDER BY id",
            (type_,),
        )
        for (payload,) in cursor.fetchall():
            yield Event.model_validate_json(payload)

    def mark_published(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        with self.transaction():
            self.db.conn.executemany(
                "UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), i) for i in ids]
            )

    def replace_payload(self, row_id: int, payload: bytes) -> None:
        with self.transaction():
            self.db.conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (payload, row_id))

    def outbox_backlog(self) -> int:
        return self.db.conn.execute(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        ).fetchone()[0]

    # -- jobs --------------------------------------------------------------

    def create_job(
        self, job_id: str, request: GenerationRequest, source: str, planned: list[str]
    ) -> bool:
        """Create a job with its phases and its job.accepted event; False if it already exists
        (or existed: a pruned job leaves its id behind)."""
        now = time.time()
        with self.transaction():
            if self.db.conn.execute(
                "SELECT 1 FROM pruned_jobs WHERE job_id = ?", (job_id,)
            ).fetchone():
                return False
            cursor = self.db.conn.execute(
                "INSERT OR IGNORE INTO jobs (job_id, request_id, project_name, request, source, state, "
                "planned, cancel_requested, created_at, updated_at) VALUES (?,?,?,?,?,?,?,0,?,?)",
                (
                    job_id,
                    request.request_id,
                    request.project_name,
                    request.model_dump_json(),
                    source,
                    JobState.PENDING.name,
                    json.dumps(planned),
                    now,
                    now,
                ),
            )
            if cursor.rowcount == 0:
                return False
            self.db.conn.executemany(
                "INSERT INTO phases (job_id, phase, status, attempts) VALUES (?, ?, ?, 0)",
                [(job_id, phase, PhaseStatus.PENDING.value) for phase in planned],
            )
            self._emit(
                job_id,
                request.request_id,
                "job.accepted",
                project_name=request.project_name,
                phases=planned,
            )
        return True

    def job(self, job_id: str) -> JobRecord:
        row = self.db.conn.execute(
            "SELECT job_id, request_id, request, state, planned, plan, cancel_requested "
            "FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        failed = self._phases_with_status(job_id, PhaseStatus.FAILED)
        return JobRecord(
            job_id=row[0],
            request_id=row[1],
            request=GenerationRequest.model_validate_json(row[2]),
            state=JobState[row[3]],
            planned=json.loads(row[4]),
            plan=ArchPlan.model_validate_json(row[5]) if row[5] else None,
            failed_phases=failed,
            cancel_requested=bool(row[6]),
        )

    def _phases_with_status(self, job_id: str, status: PhaseStatus) -> list[str]:
        rows = self.db.conn.execute(
            "SELECT phase FROM phases WHERE job_id = ? AND status = ?", (job_id, status.value)
        ).fetchall()
        return [row[0] for row in rows]

    def jobs_by_state(self) -> dict[str, int]:
        return dict(self.db.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))

    def unfinished_jobs(self) -> int:
        return self.db.conn.execute(
            f"SELECT count(*) FROM jobs WHERE {_UNFINISHED}", _TERMINAL_NAMES
        ).fetchone()[0]

    def runnable_jobs(self, exclude: Iterable[str], limit: int) -> list[str]:
        """Jobs not in a terminal state, oldest first, skipping those already running here."""
        exclude = set(exclude)
        rows = self.db.conn.execute(
            f"SELECT job_id FROM jobs WHERE {_UNFINISHED} "
            "AND (not_before IS NULL OR not_before <= ?) ORDER BY created_at LIMIT ?",
            (*_TERMINAL_NAMES, time.time(), limit + len(exclude)),
        ).fetchall()
        return [row[0] for row in rows if row[0] not in exclude][:limit]

    def _set_state(self, job_id: str, state: JobState, trigger: str = "advance") -> None:
        """Persist the job's state as its machine moved it by ``trigger``, guarded by the
        states that trigger may move a job from."""
        sources = [s.name for s in JOB_TRIGGERS[trigger]]
        cursor = self.db.conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ? WHERE job_id = ? AND state IN ({_marks(sources)})",
            (state.name, time.time(), job_id, *sources),
        )
        if cursor.rowcount == 0:
            row = self.db.conn.execute(
                "SELECT state FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            raise IllegalMove(
                f"job {job_id}: cannot {trigger} to {state.name} from {row[0] if row else 'nowhere'}"
            )

    def _move_phase(
        self,
        job_id: str,
        phase: str,
        trigger: str,
        assignments: str = "",
        args: Sequence[object] = (),
    ) -> int:
        """Persist a phase's move by ``trigger`` (with more ``assignments``, each starting
        with a comma), guarded by the statuses the machine's table allows it from; returns
        the phase's attempts. Raises IllegalMove when the phase is in none of them."""
        sources = [s.value for s in phase_sources(trigger)]
        row = self.db.conn.execute(
            f"UPDATE phases SET status = ?{assignments} WHERE job_id = ? AND phase = ? "
            f"AND status IN ({_marks(sources)}) RETURNING attempts",
            (phase_dest(trigger).value, *args, job_id, phase, *sources),
        ).fetchone()
        if row is None:
            found = self.db.conn.execute(
                "SELECT status FROM phases WHERE job_id = ? AND phase = ?", (job_id, phase)
            ).fetchone()
            raise IllegalMove(
                f"job {job_id}: cannot {trigger} {phase}, which is {found[0] if found else 'not planned'}"
            )
        return int(row[0])

    def request_cancel(self, job_id: str) -> None:
        self.job(job_id)
        with self.transaction():
            self.db.conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        row = self.db.conn.execute(
            "SELECT cancel_requested FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return bool(row and row[0])

    # -- phases ------------------------------------------------------------

    def record_death(self, job_id: str, phase: str, point: Point | None) -> Death | None:
        """A phase found running when its job starts was left so by a process that died
        in it. Record where (``point``, None when unknown) and return the death, or None
        when the phase is not running. A death counts against the phase (``in_a_row``)
        only while it brings no progress: the phase committed no file since the last death
        and died at the same point; else the count starts again at 1. A death while the
        phase waited, or where it was is not known, leaves the count as it was."""
        row = self.db.conn.execute(
            "SELECT status, interruptions, death_call, death_stage, death_chars, death_files, "
            "deaths_in_a_row FROM phases WHERE job_id = ? AND phase = ?",
            (job_id, phase),
        ).fetchone()
        status, deaths, *last, files_then, in_a_row = row
        if status != PhaseStatus.RUNNING.value:
            return None
        if point is None or not point.evidence:
            with self.transaction():  # counted, but neither for nor against the phase
                self._move_phase(job_id, phase, "crash", ", interruptions = interruptions + 1")
            return Death(deaths + 1, in_a_row, point)
        files = self.count_files(job_id, [phase])
        previous = Point(*last) if None not in last else None
        same_point = previous is not None and point.near(previous)
        in_a_row = in_a_row + 1 if same_point and files == files_then else 1
        where = (point.call, point.stage, point.chars)
        with self.transaction():
            # Counted once: the phase is no longer 'running' until it starts again, so a
            # phase still waiting to restart when the next death comes is not blamed twice.
            self._move_phase(
                job_id,
                phase,
                "crash",
                ", interruptions = interruptions + 1, death_call = ?, death_stage = ?, "
                "death_chars = ?, death_files = ?, deaths_in_a_row = ?",
                (*where, files, in_a_row),
            )
        return Death(deaths + 1, in_a_row, point)

    def running_phases(self) -> list[tuple[str, str]]:
        """``(job_id, phase)`` of every phase marked running."""
        rows = self.db.conn.execute(
            "SELECT job_id, phase FROM phases WHERE status = ?", (PhaseStatus.RUNNING.value,)
        ).fetchall()
        return [(job_id, phase) for job_id, phase in rows]

    def deaths_in_a_row(self, job_id: str, phase: str) -> int:
        row = self.db.conn.execute(
            "SELECT deaths_in_a_row FROM phases WHERE job_id = ? AND phase = ?", (job_id, phase)
        ).fetchone()
        return int(row[0]) if row else 0

    def defer(self, job_id: str, phase: str, delay_s: float) -> None:
        """Put a job aside for ``delay_s`` (its phase is interrupted, not failed)."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE jobs SET not_before = ? WHERE job_id = ?", (time.time() + delay_s, job_id)
            )
            self._move_phase(job_id, phase, "defer")

    def record_call(self, call: CallRecord) -> None:
        """One model call of a phase, answered or not, with its usage and error. Written
        with the store's next transaction (a file, the phase's end), not one of its own."""
        usage = call.usage
        self._pending_calls.append(
            (
                call.job_id,
                call.phase,
                call.call,
                call.model,
                call.max_tokens,
                call.stop_reason,
                call.error,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens,
                usage.cost_usd,
                call.started_at,
                call.duration_s,
            )
        )

    def _write_calls(self) -> None:
        if self._pending_calls:
            self.db.conn.executemany(_INSERT_CALL, self._pending_calls)
            self._pending_calls.clear()

    def calls(self, job_id: str, phase: str | None = None) -> list[CallRecord]:
        self.flush()
        query = (
            "SELECT job_id, phase, call, model, max_tokens, stop_reason, error, input_tokens, "
            "output_tokens, cache_read_input_tokens, cache_creation_input_tokens, cost_usd, "
            "started_at, duration_s FROM calls WHERE job_id = ?"
        )
        args: tuple[str, ...] = (job_id,)
        if phase is not None:
            query, args = query + " AND phase = ?", (job_id, phase)
        return [
            CallRecord(
                job_id=r[0],
                phase=r[1],
                call=r[2],
                model=r[3],
                max_tokens=r[4],
                stop_reason=r[5],
                error=r[6],
                usage=Usage(
                    input_tokens=r[7],
                    output_tokens=r[8],
                    cache_read_input_tokens=r[9],
                    cache_creation_input_tokens=r[10],
                    cost_usd=r[11],
                    calls=1,
                ),
                started_at=r[12],
                duration_s=r[13],
            )
            for r in self.db.conn.execute(query + " ORDER BY id", args).fetchall()
        ]

    def job_usage(self, job_id: str) -> Usage:
        totals = self.db.conn.execute(
            "SELECT "
            + ", ".join(f"coalesce(sum({n}), 0)" for n in USAGE_COLUMNS)
            + " FROM phases WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return Usage(**dict(zip(USAGE_COLUMNS, totals, strict=True)))

    def interrupt_phase(self, job_id: str, phase: str) -> None:
        """A phase stopped on purpose (shutdown): not a crash; it runs again at the next start."""
        with self.transaction():
            self._move_phase(job_id, phase, "interrupt")

    def start_phase(self, job: JobRecord, phase: str, step: str, state: JobState) -> int:
        """Mark a phase running, checkpoint the job's state, announce it; returns the attempt."""
        with self.transaction():
            self._set_state(job.job_id, state)
            attempt = self._move_phase(
                job.job_id,
                phase,
                "start",
                ", attempts = attempts + 1, started_at = ?, error = NULL",
                (time.time(),),
            )
            self._emit(
                job.job_id, job.request_id, "phase.started", phase=phase, step=step, attempt=attempt
            )
        job.state = state
        return attempt

    def complete_phase(
        self,
        job: JobRecord,
        outcome: PhaseOutcome,
        next_state: JobState,
        job_warnings: Sequence[str] = (),
    ) -> list[FileRecord]:
        """One transaction: the files, the phase's result, the job's next state, the events."""
        records = [new.record() for new in outcome.files]
        conn = self.db.conn
        with self.transaction():
            conn.executemany(
                _UPSERT_FILE, [self._file_row(job.job_id, outcome.phase, r) for r in records]
            )
            self._finish_phase_row(job.job_id, outcome, "complete", None)
            if outcome.plan is not None:
                conn.execute(
                    "UPDATE jobs SET plan = ? WHERE job_id = ?",
                    (outcome.plan.model_dump_json(), job.job_id),
                )
            if outcome.verification is not None:
                conn.execute(
                    "UPDATE jobs SET verification = ? WHERE job_id = ?",
                    (outcome.verification.model_dump_json(), job.job_id),
                )
            self._emit(
                job.job_id,
                job.request_id,
                "phase.completed",
                phase=outcome.phase,
                step=outcome.step,
                files=records,
                usage=outcome.usage,
                duration_s=round(outcome.duration_s, 3),
                warnings=outcome.warnings,
                verification=outcome.verification,
                plan=outcome.plan,
            )
            self._advance(job, next_state, job_warnings)
        job.state = next_state
        if outcome.plan is not None:
            job.plan = outcome.plan
        return records

    def fail_phase(
        self,
        job: JobRecord,
        outcome: PhaseOutcome,
        error: str,
        next_state: JobState,
        job_warnings: Sequence[str] = (),
    ) -> None:
        with self.transaction():
            attempts = self._finish_phase_row(job.job_id, outcome, "fail", error)
            self._emit(
                job.job_id,
                job.request_id,
                "phase.failed",
                phase=outcome.phase,
                step=outcome.step,
                error=error,
                attempts=attempts,
            )
            self._advance(job, next_state, job_warnings)
        job.state = next_state
        job.failed_phases.append(outcome.phase)

    def _finish_phase_row(
        self, job_id: str, outcome: PhaseOutcome, trigger: str, error: str | None
    ) -> int:
        return self._move_phase(
            job_id,
            outcome.phase,
            trigger,
            ", finished_at = ?, duration_s = ?, error = ?, warnings = ?, "
            + ", ".join(f"{name} = {name} + ?" for name in USAGE_COLUMNS),
            (
                time.time(),
                outcome.duration_s,
                error,
                json.dumps(outcome.warnings),
                *(getattr(outcome.usage, name) for name in USAGE_COLUMNS),
            ),
        )

    def _advance(
        self,
        job: JobRecord,
        next_state: JobState,
        warnings: Sequence[str] = (),
        trigger: str = "advance",
    ) -> None:
        """Persist the job's next state; a job that ends (which it does once: no trigger
        moves a job from a terminal state but reopen) is announced with job.completed."""
        self._set_state(job.job_id, next_state, trigger)
        if next_state.is_terminal:
            self._emit_job_completed(job, next_state, warnings)

    def announce_resumed(self, reason: str) -> list[tuple[str, JobState]]:
        """A job.resumed event for every job stopped in a phase, in one transaction;
        returns those jobs and their states."""
        rows = self.db.conn.execute(
            f"SELECT job_id, request_id, state FROM jobs WHERE {_UNFINISHED} ORDER BY created_at",
            _TERMINAL_NAMES,
        ).fetchall()
        resumed = [(job_id, request_id, JobState[state]) for job_id, request_id, state in rows]
        resumed = [item for item in resumed if item[2].phase is not None]
        with self.transaction():
            for job_id, request_id, state in resumed:
                self._emit(job_id, request_id, "job.resumed", from_phase=state.name, reason=reason)
        return [(job_id, state) for job_id, _, state in resumed]

    def end_job(self, job_id: str) -> None:
        """Fail an unfinished job whose runner broke: every phase the machine's ``fail``
        may move fails, and job.completed announces it. Written from the transition table
        without building the job's machines: they may be what broke."""
        job = self.job(job_id)
        if job.state.is_terminal:
            return
        sources = [s.value for s in phase_sources("fail")]
        with self.transaction():
            self.db.conn.execute(
                "UPDATE phases SET status = ?, error = 'internal error' "
                f"WHERE job_id = ? AND status IN ({_marks(sources)})",
                (phase_dest("fail").value, job_id, *sources),
            )
            self._advance(job, JobState.FAILED, trigger="fail")
        job.state = JobState.FAILED

    def hold(self, job_id: str, phase: str, reason: str, delay_s: float) -> None:
        """Put a job aside because the model API refuses the account: until ``delay_s``
        has passed or the daemon starts again (:meth:`release_held`)."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE jobs SET not_before = ?, held = ? WHERE job_id = ?",
                (time.time() + delay_s, reason, job_id),
            )
            self._move_phase(job_id, phase, "defer")

    def release_held(self) -> int:
        """At start: jobs put aside for the model API's refusal may run at once."""
        with self.transaction():
            cursor = self.db.conn.execute(
                "UPDATE jobs SET not_before = NULL, held = NULL WHERE held IS NOT NULL"
            )
        return cursor.rowcount

    def move(self, job: JobRecord, state: JobState, trigger: str = "advance") -> None:
        """Persist a move of the job's machine by ``trigger`` that ran no phase (skip,
        cancel); a terminal state is announced with job.completed in the same transaction."""
        with self.transaction():
            self._advance(job, state, trigger=trigger)
        job.state = state

    def _emit_job_completed(self, job: JobRecord, state: JobState, warnings: Sequence[str]) -> None:
        files_total = self.db.conn.execute(
            "SELECT count(*) FROM files WHERE job_id = ?", (job.job_id,)
        ).fetchone()[0]
        verified = self.db.conn.execute(
            "SELECT verification FROM jobs WHERE job_id = ?", (job.job_id,)
        ).fetchone()[0]
        self._emit(
            job.job_id,
            job.request_id,
            "job.completed",
            status=state.name.lower(),
            files_total=files_total,
            failed_phases=self._phases_with_status(job.job_id, PhaseStatus.FAILED),
            usage=self.job_usage(job.job_id),
            warnings=list(warnings),
            verification=Verification.model_validate_json(verified) if verified else None,
        )

    def phases(self, job_id: str) -> list[PhaseRecord]:
        rows = self.db.conn.execute(
            "SELECT phase, status, attempts, "
            + ", ".join(USAGE_COLUMNS)
            + ", duration_s, error FROM phases WHERE job_id = ?",
            (job_id,),
        ).fetchall()
        records = [
            PhaseRecord(
                phase=r[0],
                status=PhaseStatus(r[1]),
                attempts=r[2],
                usage=Usage(**dict(zip(USAGE_COLUMNS, r[3:9], strict=True))),
                duration_s=r[9],
                error=r[10],
            )
            for r in rows
        ]
        order = self.job(job_id).planned
        return sorted(records, key=lambda rec: order.index(rec.phase))

    # -- files -------------------------------------------------------------

    def stage_files(self, job_id: str, phase: str, files: Sequence[NewFile]) -> None:
        """Commit files of a running phase the moment they are complete."""
        rows = [self._file_row(job_id, phase, new.record()) for new in files]
        with self.transaction():
            self.db.conn.executemany(_UPSERT_FILE, rows)

    def stage_plan(self, job_id: str, plan: ArchPlan) -> None:
        """Commit ARCH's plan as far as it goes, so a restart continues it rather than
        paying for it again (ARCH's commit writes the whole plan)."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE jobs SET plan = ? WHERE job_id = ?", (plan.model_dump_json(), job_id)
            )

    @staticmethod
    def _file_row(job_id: str, phase: str, record: FileRecord) -> tuple[object, ...]:
        return (job_id, record.path, phase, record.content, record.sha256, record.size, time.time())

    def files_of_phases(self, job_id: str, phases: Iterable[str]) -> list[FileRecord]:
        """What the given phases produced (the manifest a phase builds on), in phase order."""
        names = list(phases)
        if not names:
            return []
        rows = self.db.conn.execute(
            "SELECT path, sha256, size, content, phase FROM files WHERE job_id = ? "
            f"AND phase IN ({','.join('?' * len(names))}) ORDER BY rowid",
            (job_id, *names),
        ).fetchall()
        order = {name: index for index, name in enumerate(PHASE_NAMES)}
        rows.sort(key=lambda r: order[r[4]])
        return [FileRecord(path=r[0], sha256=r[1], size=r[2], content=r[3]) for r in rows]

    def phase_statuses(self, job_id: str) -> dict[str, PhaseStatus]:
        rows = self.db.conn.execute(
            "SELECT phase, status FROM phases WHERE job_id = ?", (job_id,)
        ).fetchall()
        return {phase: PhaseStatus(status) for phase, status in rows}

    def count_files(self, job_id: str, phases: Iterable[str] | None = None) -> int:
        query, args = "SELECT count(*) FROM files WHERE job_id = ?", [job_id]
        if phases is not None:
            names = list(phases)
            query += f" AND phase IN ({','.join('?' * len(names))})"
            args += names
        return int(self.db.conn.execute(query, args).fetchone()[0])

    def files(self, job_id: str, phase: str | None = None) -> list[FileRecord]:
        query = "SELECT path, sha256, size, content FROM files WHERE job_id = ?"
        args: tuple[str, ...] = (job_id,)
        if phase is not None:
            query += " AND phase = ?"
            args = (job_id, phase)
        rows = self.db.conn.execute(query + " ORDER BY rowid", args).fetchall()
        return [FileRecord(path=r[0], sha256=r[1], size=r[2], content=r[3]) for r in rows]

    def file_phases(self, job_id: str) -> dict[str, str]:
        """Every file of the job, path to the phase that last wrote it."""
        rows = self.db.conn.execute(
            "SELECT path, phase FROM files WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return dict(rows)

    def file_contents(self, job_id: str) -> dict[str, str]:
        """Every file of the job, path to content (for the code checks)."""
        rows = self.db.conn.execute(
            "SELECT path, content FROM files WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return dict(rows)

    # -- retention ---------------------------------------------------------

    def prunable(self, before: float) -> Pruned:
        """What ``prune_jobs`` and ``prune_events`` would remove for this cutoff (a
        ``time.time()``), without removing it."""
        jobs = self.db.conn.execute(
            f"SELECT count(*) FROM jobs WHERE {_PRUNABLE_JOB}", (*_TERMINAL_NAMES, before)
        ).fetchone()[0]
        events = self.db.conn.execute(
            f"SELECT count(*) FROM outbox WHERE {_PRUNABLE_EVENT} OR (published_at IS NOT NULL "
            f"AND {_NOT_NEWEST} AND job_id IN (SELECT job_id FROM jobs WHERE {_PRUNABLE_JOB}))",
            (before, *_TERMINAL_NAMES, before),
        ).fetchone()[0]
        return Pruned(jobs=jobs, events=events)

    def prune_jobs(self, before: float, limit: int) -> Pruned:
        """Delete up to ``limit`` finished jobs last changed before ``before``, with their
        phases, files, calls and events, in one transaction; returns the jobs and events
        deleted. A job with an event not yet published stays. Its id stays in pruned_jobs,
        so a redelivered request makes no second job, and its seq counter stays."""
        with self.transaction():
            ids = [
                row[0]
                for row in self.db.conn.execute(
                    f"SELECT job_id FROM jobs WHERE {_PRUNABLE_JOB} ORDER BY updated_at LIMIT ?",
                    (*_TERMINAL_NAMES, before, limit),
                )
            ]
            if not ids:
                return Pruned()
            marks = ",".join("?" * len(ids))
            for table in ("calls", "files", "phases"):
                self.db.conn.execute(f"DELETE FROM {table} WHERE job_id IN ({marks})", ids)
            events = self.db.conn.execute(
                f"DELETE FROM outbox WHERE job_id IN ({marks}) AND {_NOT_NEWEST}", ids
            ).rowcount
            self.db.conn.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", ids)
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO pruned_jobs (job_id, pruned_at) VALUES (?, ?)",
                [(job_id, time.time()) for job_id in ids],
            )
        return Pruned(jobs=len(ids), events=events)

    def prune_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` outbox rows published before ``before``, in one
        transaction; returns how many. Unpublished rows stay, and so does the newest row,
        so row ids never restart (the relay's sync point counts on them growing)."""
        with self.transaction():
            cursor = self.db.conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE "
                f"{_PRUNABLE_EVENT} ORDER BY published_at LIMIT ?)",
                (before, limit),
            )
        return cursor.rowcount

    # -- resume and listing ------------------------------------------------

    def reopen(self, job_id: str, reason: str) -> str | None:
        """Re-queue a job: its failed and unfinished phases become pending again, and so
        does VERIFY (the phases run again change the project it verified).

        Returns the phase it resumes from, or None when nothing is left to run.
        """
        job = self.job(job_id)
        machine = JobMachine(job.planned, job.state, self.phase_statuses(job_id))
        try:
            reopened, resumes = machine.reopen(), machine.current
        finally:
            machine.release()
        if not reopened:
            return None
        with self.transaction():
            for name in reopened:
                self._move_phase(job_id, name, "reopen")
            self.db.conn.execute("UPDATE jobs SET cancel_requested = 0 WHERE job_id = ?", (job_id,))
            self._set_state(job_id, resumes, "reopen")
            self._emit(
                job_id, job.request_id, "job.resumed", from_phase=resumes.name, reason=reason
            )
        return resumes.name

    def jobs(self, states: Iterable[JobState] | None = None) -> list[dict[str, Any]]:
        query = "SELECT job_id, project_name, state, created_at, updated_at FROM jobs"
        args: list[str] = []
        if states is not None:
            names = [s.name for s in states]
            query += f" WHERE state IN ({','.join('?' * len(names))})"
            args = names
        rows = self.db.conn.execute(query + " ORDER BY created_at", args).fetchall()
        keys = ("job_id", "project_name", "state", "created_at", "updated_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _create_private(path: Path) -> None:
    """Create the store's folder (0700) and file (0600) if they do not exist, whatever the
    umask: the store holds every request and every generated file. SQLite gives the -wal
    and -shm files the database file's mode. What exists already keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or, dry, would remove)."""

    jobs: int = 0
    events: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.jobs + other.jobs, self.events + other.events)


@dataclass(frozen=True)
class Death:
    """A process died while a phase ran: the phase's deaths so far, how many of the last
    came in a row at one point without progress, and where this one came."""

    total: int
    in_a_row: int
    point: Point | None


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
