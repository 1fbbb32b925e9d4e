"""A store file written at schema version 7 opens with this codegend at version 8: its
jobs get their requests partition from their source, the store an identity of its own."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import sqlite_utils

from daemon.states import JobState
from daemon.store import SCHEMA_VERSION, Store
from daemon.store.schema import MIGRATIONS
from tests.support.store_records import sample_request

V7_JOB = (
    "INSERT INTO jobs (job_id, request_id, project_name, request, source, state, planned, "
    "cancel_requested, created_at, updated_at) VALUES (?, ?, 'p', ?, ?, 'PENDING', ?, 0, 1.0, 1.0)"
)


def version_7_store(path: Path, sources: dict[str, str]) -> None:
    """A store as codegend at schema version 7 left it, with a pending job per source."""
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    for migration in MIGRATIONS[:7]:
        with db.atomic():
            migration(db)
    for job_id, source in sources.items():
        request = sample_request(job_id).model_dump_json()
        db.conn.execute(V7_JOB, (job_id, job_id, request, source, json.dumps(["ARCH"])))
        db.conn.execute(
            "INSERT INTO phases (job_id, phase, status) VALUES (?, 'ARCH', 'pending')", (job_id,)
        )
    db.conn.execute("PRAGMA user_version = 7")
    db.close()


def test_a_version_7_store_is_upgraded(tmp_path):
    path = tmp_path / "s.db"
    version_7_store(path, {"kafka-job": "codegen.requests:3:17", "tool-job": "test"})
    store = Store(path, changelog=True)
    assert store.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    partitions = dict(store.db.conn.execute('SELECT job_id, "partition" FROM jobs'))
    assert partitions == {"kafka-job": 3, "tool-job": 0}
    assert len(store.store_id()) == 32 and store.marks() == []
    job = store.job("kafka-job")
    store.start_phase(job, "ARCH", "1", JobState.ARCH)  # the upgraded job runs on, marked
    assert {(m.key, m.partition) for m in store.marks()} == {
        ("kafka-job", 3),
        ("kafka-job/phase/ARCH", 3),
        ("kafka-job/event/1", 3),
    }
    store.close()


def test_the_store_keeps_its_identity(tmp_path):
    path = tmp_path / "s.db"
    first = Store(path)
    store_id = first.store_id()
    first.close()
    assert Store(path).store_id() == store_id != Store(tmp_path / "other.db").store_id()
