"""The store's connection: opening the file (private, WAL, checked), transactions that
say when the disk is full, and the syncs that make commits survive power loss."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlite_utils

from daemon.errors import StoreError, StoreFull
from daemon.store.schema import migrate

BUSY_TIMEOUT_MS = 10_000
INSERT_CALL = (
    "INSERT INTO calls (job_id, phase, call, model, max_tokens, stop_reason, error, "
    "input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, "
    "cost_usd, started_at, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full: SQLITE_FULL from SQLite, or
    ENOSPC / EDQUOT from the operating system."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class StoreBase:
    """One connection to the store file, and its transactions. With ``changelog`` on,
    every write also marks the changelog keys it changed, in its own transaction."""

    def __init__(self, path: Path, changelog: bool = False) -> None:
        self.path = path
        self.changelog = changelog
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
            migrate(self.db, self.path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"store {path} is not a usable SQLite database: {exc}") from None

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

    def store_id(self) -> str:
        """This store's identity (made by the migration to schema 8), named in its claims."""
        row = self.db.conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
        return str(row[0])

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
        covered: int
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

    def _write_calls(self) -> None:
        if self._pending_calls:
            self.db.conn.executemany(INSERT_CALL, self._pending_calls)
            self._pending_calls.clear()


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _create_private(path: Path) -> None:
    """Create the store's folder (0700) and file (0600) if they do not exist, whatever the
    umask: the store holds every request and every generated file. SQLite gives the -wal
    and -shm files the database file's mode. What exists already keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
