"""A store the daemon cannot trust stops it at start with one clear line, no traceback:
a file that is not SQLite, torn pages, an integrity check that fails, a newer schema."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from subprocess import PIPE

from daemon.store import SCHEMA_VERSION, Store
from tests.support.processes import CODEGEND, ROOT, daemon_env

PAGE_BYTES = 4096


@contextmanager
def connected(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit; at the end everything is in the main file (no WAL left)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def filled_store(path: Path) -> None:
    """A real store with a table big enough to span many pages."""
    Store(path).close()
    with connected(path) as conn:
        conn.execute("CREATE TABLE filler (n INTEGER, text TEXT)")
        conn.execute("CREATE INDEX filler_n ON filler (n)")
        conn.executemany("INSERT INTO filler VALUES (?, ?)", [(i, "x" * 500) for i in range(300)])


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def torn_pages(path: Path) -> None:
    filled_store(path)
    data = bytearray(path.read_bytes())
    for page in range(len(data) // PAGE_BYTES - 3, len(data) // PAGE_BYTES - 1):
        data[page * PAGE_BYTES : page * PAGE_BYTES + 100] = b"\xff" * 100
    path.write_bytes(bytes(data))


def index_out_of_step(path: Path) -> None:
    """Readable pages, but an index that does not match its table: only
    PRAGMA integrity_check finds it."""
    filled_store(path)
    with connected(path) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = 'CREATE INDEX filler_n ON filler (n DESC)' "
            "WHERE name = 'filler_n'"
        )


def newer_schema(path: Path) -> None:
    Store(path).close()
    with connected(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


DAMAGES = {
    "not SQLite": (not_sqlite, "is not a usable SQLite database: file is not a database"),
    "torn pages": (torn_pages, "is not a usable SQLite database: database disk image is malformed"),
    "integrity": (index_out_of_step, "is corrupt: row 1 missing from index filler_n"),
    "newer": (newer_schema, f"newer than this codegend ({SCHEMA_VERSION}); upgrade codegend"),
}


def test_the_daemon_refuses_a_damaged_store(tmp_path, kafka_bootstrap, topic_names):
    runs = {}
    for name, (damage, _) in DAMAGES.items():  # the four daemons start side by side
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        variables = daemon_env(folder, kafka_bootstrap, topic_names, "http://127.0.0.1:9")
        store = Path(variables["CODEGEND_STORE__PATH"])
        damage(store)
        process = subprocess.Popen(
            [*CODEGEND, "run"], env=variables, cwd=ROOT, stdout=PIPE, stderr=PIPE, text=True
        )
        runs[name] = (store, store.read_bytes(), process)
    try:
        for name, (store, before, process) in runs.items():
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 1, (name, stderr)
            assert "Traceback" not in stderr + stdout, (name, stderr)
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (name, stderr)  # one line, naming the file and what is wrong
            assert errors[0].startswith(f"error: store {store} "), (name, errors)
            assert errors[0].endswith(DAMAGES[name][1]), (name, errors)
            assert store.read_bytes() == before, name  # refused, not "repaired"
    finally:
        for _, _, process in runs.values():
            if process.poll() is None:
                process.kill()
            process.communicate()
