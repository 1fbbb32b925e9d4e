"""The store's schema: one migration per version, in version order, each run in a
transaction of its own. A store file records its version in ``PRAGMA user_version``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from daemon.contract import Usage
from daemon.errors import StoreError

USAGE_COLUMNS = tuple(name for name in Usage.model_fields)
TOKEN_COLUMNS = tuple(name for name in USAGE_COLUMNS if name != "cost_usd")


def _create_v1(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
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
    db.table("phases").create(
        {
            "job_id": str,
            "phase": str,
            "status": str,
            "attempts": int,
            **{name: int for name in TOKEN_COLUMNS},
            "started_at": float,
            "finished_at": float,
            "duration_s": float,
            "error": str,
            "warnings": str,
        },
        pk=("job_id", "phase"),
        not_null={"attempts", *TOKEN_COLUMNS},
        defaults={"attempts": 0, **{name: 0 for name in TOKEN_COLUMNS}},
        foreign_keys=[("job_id", "jobs", "job_id")],
    )
    db.table("files").create(
        {"job_id": str, "path": str, "phase": str, "content": str, "sha256": str, "size": int},
        pk=("job_id", "path"),
        foreign_keys=[("job_id", "jobs", "job_id")],
    )
    db.table("sequences").create({"job_id": str, "last_seq": int}, pk="job_id")
    db.table("outbox").create(
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
    db.table("outbox").create_index(["published_at", "id"])
    db.table("outbox").create_index(["job_id", "seq"], unique=True)
    db.table("jobs").create_index(["state", "created_at"])


def _add_interruptions(db: sqlite_utils.Database) -> None:
    # How often a phase was left running by a process that died in it.
    db.table("phases").add_column("interruptions", int, not_null_default=0)


def _add_file_times(db: sqlite_utils.Database) -> None:
    # When a file was first committed (a re-run of its phase keeps the first time).
    db.table("files").add_column("committed_at", float)


def _add_calls_and_costs(db: sqlite_utils.Database) -> None:
    db.table("phases").add_column("cost_usd", float, not_null_default=0.0)
    # A job waiting out a long retry-after is not picked up before this time.
    db.table("jobs").add_column("not_before", float)
    db.table("calls").create(
        {
            "id": int,
            "job_id": str,
            "phase": str,
            "call": int,
            "model": str,
            "max_tokens": int,
            "stop_reason": str,
            "error": str,
            **{name: int for name in TOKEN_COLUMNS if name != "calls"},
            "cost_usd": float,
            "started_at": float,
            "duration_s": float,
        },
        pk="id",
    )
    db.table("calls").create_index(["job_id", "phase"])


def _add_sync_points(db: sqlite_utils.Database) -> None:
    # One row: when the store was last synced and the outbox rows that covered.
    db.table("sync_points").create({"id": int, "at": float, "outbox_id": int}, pk="id")


def _add_death_points(db: sqlite_utils.Database) -> None:
    phases = db.table("phases")
    # Where the phase was when a process last died in it, how many files it had then,
    # and how many deaths in a row came at that same point (see daemon.progress).
    for name in ("death_call", "death_stage", "death_chars", "death_files"):
        phases.add_column(name, int)
    phases.add_column("deaths_in_a_row", int, not_null_default=0)
    # Why a job is put aside until the next start or its not_before (model access).
    db.table("jobs").add_column("held", str)
    # The ids of pruned jobs: a request redelivered after its job was pruned is still a
    # duplicate, never a second job.
    db.table("pruned_jobs").create({"job_id": str, "pruned_at": float}, pk="job_id")


def _add_verification(db: sqlite_utils.Database) -> None:
    # VERIFY's summary (models.Verification as JSON), repeated in job.completed.
    db.table("jobs").add_column("verification", str)


def partition_of(source: str) -> int:
    """The requests partition of a job read from ``topic:partition:offset`` (topic names
    hold no ``:``); 0 for a job with another source (written by a tool or a test)."""
    parts = source.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def _add_cluster(db: sqlite_utils.Database) -> None:
    jobs = db.table("jobs")
    jobs.add_column("partition", int)
    rows = db.conn.execute("SELECT job_id, source FROM jobs").fetchall()
    db.conn.executemany(
        'UPDATE jobs SET "partition" = ? WHERE job_id = ?',
        [(partition_of(source or ""), job_id) for job_id, source in rows],
    )
    jobs.create_index(["partition", "state", "created_at"])
    # The changelog keys changed since the relay last sent them, in mark order:
    # AUTOINCREMENT, so a re-marked key always gets a greater id than any before it.
    db.conn.execute(
        "CREATE TABLE changelog_marks (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        'key TEXT NOT NULL UNIQUE, "partition" INTEGER NOT NULL)'
    )
    # One row per requests partition this store has owned.
    db.table("partitions").create(
        {
            "partition": int,
            "fence": int,
            "claim_offset": int,
            "state": str,
            "synced_offset": int,
            "commands_offset": int,
            "updated_at": float,
        },
        pk="partition",
    )
    # This store's identity, named in its claims.
    db.table("store_meta").create({"key": str, "value": str}, pk="key")
    db.conn.execute("INSERT INTO store_meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_v1,
    _add_interruptions,
    _add_file_times,
    _add_calls_and_costs,
    _add_sync_points,
    _add_death_points,
    _add_verification,
    _add_cluster,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite_utils.Database, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION, one version per transaction."""
    version = db.conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}, newer than this codegend "
            f"({SCHEMA_VERSION}); upgrade codegend"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with db.atomic():
            MIGRATIONS[target - 1](db)
            db.conn.execute(f"PRAGMA user_version = {target}")
