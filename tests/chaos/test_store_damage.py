"""A store the daemon cannot trust stops it at start with one clear line, no traceback:
a file that is not SQLite, torn pages, an integrity check that fails, a newer schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from daemon.store import SCHEMA_VERSION, Store
from tests.proc import codegend, daemon_env

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


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (not_sqlite, "is not a usable SQLite database: file is not a database"),
        (torn_pages, "is not a usable SQLite database: database disk image is malformed"),
        (index_out_of_step, "is corrupt: row 1 missing from index filler_n"),
        (newer_schema, f"newer than this codegend ({SCHEMA_VERSION}); upgrade codegend"),
    ],
    ids=["not-sqlite", "torn-pages", "integrity-check", "newer-schema"],
)
def test_the_daemon_refuses_a_damaged_store(tmp_path, kafka_bootstrap, topic_names, damage, says):
    variables = daemon_env(tmp_path, kafka_bootstrap, topic_names, "http://127.0.0.1:9")
    store = Path(variables["CODEGEND_STORE__PATH"])
    damage(store)
    before = store.read_bytes()
    result = codegend(variables, "run", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr  # one line, naming the file and what is wrong
    assert errors[0].startswith(f"error: store {store} ") and errors[0].endswith(says)
    assert store.read_bytes() == before  # refused, not "repaired"
