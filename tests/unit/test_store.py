import sqlite3

import pytest

from daemon.contract import GenerationRequest, JobResumed, Usage, parse_event
from daemon.errors import IllegalMove, StoreError
from daemon.progress import ANSWERED, SAME_POINT_CHARS, STREAMING, WAITING, Point
from daemon.records import NewFile, PhaseOutcome
from daemon.states import JobState
from daemon.store import SCHEMA_VERSION, Store

REQUEST = GenerationRequest.model_validate(
    {"request_id": "r1", "project_name": "p", "mockup": {"kind": "text", "description": "d"}}
)


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "s.db")
    yield opened
    opened.close()


def events(store):
    return [parse_event(row.payload) for row in store.unpublished(1000)]


def test_create_job_is_idempotent(store):
    assert store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    assert not store.create_job("r1", REQUEST, "t:0:5", ["ARCH", "DB"])
    assert [e.type for e in events(store)] == ["job.accepted"]
    assert store.job("r1").state is JobState.PENDING


def test_a_move_the_machine_does_not_allow_raises_and_writes_nothing(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    job = store.job("r1")
    before = len(events(store))
    with pytest.raises(IllegalMove, match="cannot complete ARCH, which is pending"):
        store.complete_phase(job, PhaseOutcome("ARCH", "1", files=[NewFile("a", "x")]), JobState.DB)
    with pytest.raises(IllegalMove, match="cannot interrupt ARCH, which is pending"):
        store.interrupt_phase("r1", "ARCH")
    with pytest.raises(IllegalMove, match="cannot defer DB"):
        store.defer("r1", "DB", 1.0)
    assert store.files("r1") == [] and len(events(store)) == before
    assert store.phase_statuses("r1") == {"ARCH": "pending", "DB": "pending"}
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    with pytest.raises(IllegalMove, match="cannot start ARCH, which is running"):
        store.start_phase(job, "ARCH", "1", JobState.ARCH)


def test_an_ended_job_moves_only_by_reopen(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH"])
    job = store.job("r1")
    store.move(job, JobState.CANCELLED, trigger="cancel")
    with pytest.raises(IllegalMove, match="cannot advance to COMPLETED from CANCELLED"):
        store.move(job, JobState.COMPLETED)
    store.end_job("r1")  # already ended: nothing to do
    assert [e.type for e in events(store)].count("job.completed") == 1
    assert store.reopen("r1", "test") == "ARCH"
    assert store.job("r1").state is JobState.ARCH


def test_phase_commit_writes_files_state_and_events_together(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    job = store.job("r1")
    assert store.start_phase(job, "DB", "2", JobState.DB) == 1
    outcome = PhaseOutcome(
        "DB",
        "2",
        files=[NewFile("db/schema.sql", "CREATE TABLE x;")],
        usage=Usage(input_tokens=7, output_tokens=3, calls=1),
        duration_s=1.5,
    )
    records = store.complete_phase(job, outcome, JobState.COMPLETED)
    assert records[0].size == len("CREATE TABLE x;")
    assert store.job("r1").state is JobState.COMPLETED
    kinds = [e.type for e in events(store)]
    assert kinds == ["job.accepted", "phase.started", "phase.completed", "job.completed"]
    done = events(store)[-1]
    assert done.status == "completed" and done.files_total == 1 and done.usage.output_tokens == 3
    assert [e.seq for e in events(store)] == [1, 2, 3, 4]


def test_a_failing_commit_leaves_nothing_behind(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    job = store.job("r1")
    store.start_phase(job, "DB", "2", JobState.DB)
    before = len(events(store))
    store.db.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN NEW.type = 'phase.completed' "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.complete_phase(
            job, PhaseOutcome("DB", "2", files=[NewFile("a.sql", "x")]), JobState.COMPLETED
        )
    assert store.files("r1") == []
    assert len(events(store)) == before
    assert store.job("r1").state is JobState.DB
    assert [p.status for p in store.phases("r1")] == ["pending", "running"]


def test_fail_and_reopen_reruns_only_unfinished(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB", "CONFIG"])
    job = store.job("r1")
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    store.complete_phase(job, PhaseOutcome("ARCH", "1"), JobState.DB)
    store.start_phase(job, "DB", "2", JobState.DB)
    store.fail_phase(job, PhaseOutcome("DB", "2"), "bad", JobState.CONFIG)
    store.start_phase(job, "CONFIG", "5", JobState.CONFIG)
    store.complete_phase(job, PhaseOutcome("CONFIG", "5"), JobState.PARTIAL)
    assert events(store)[-1].failed_phases == ["DB"]
    assert store.reopen("r1", "test") == "DB"
    assert store.job("r1").state is JobState.DB
    assert store.phase_statuses("r1") == {
        "ARCH": "completed",
        "DB": "pending",
        "CONFIG": "completed",
    }
    assert events(store)[-1].type == "job.resumed"


def test_published_rows_are_not_returned_again(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH"])
    rows = store.unpublished(10)
    store.mark_published(r.id for r in rows)
    assert store.unpublished(10) == [] and store.outbox_backlog() == 0


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this codegend"):
        Store(path)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(path)


def test_wal_and_synchronous(store):
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def synced_row(store):
    return store.db.conn.execute("SELECT outbox_id FROM sync_points").fetchall()


def test_sync_covers_every_commit_before_it(store, tmp_path):
    assert store.sync() == 0 and synced_row(store) == []  # nothing written: no fsync
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    store.start_phase(store.job("r1"), "ARCH", "1", JobState.ARCH)
    last = store.unpublished(10)[-1].id
    assert store.sync() == last == store.synced_outbox_id and synced_row(store) == [(last,)]
    assert store.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL
    other = Store(tmp_path / "s.db")  # another process, e.g. `codegend resume`
    other.emit("r1", "r1", JobResumed(from_phase="ARCH", reason="restart"))
    newest = other.unpublished(10)[-1].id
    assert store.sync() == last  # this connection wrote nothing since
    assert store.sync(force=True) == newest > last
    other.close()


def test_closing_syncs(tmp_path):
    store = Store(tmp_path / "s.db")
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH"])
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert synced_row(reopened) == [(reopened.unpublished(10)[-1].id,)]
    reopened.close()


def test_an_old_store_is_migrated(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE phases DROP COLUMN interruptions")
    conn.execute("ALTER TABLE files DROP COLUMN committed_at")
    conn.execute("ALTER TABLE phases DROP COLUMN cost_usd")
    conn.execute("ALTER TABLE jobs DROP COLUMN not_before")
    conn.execute("DROP TABLE calls")
    conn.execute("DROP TABLE sync_points")
    for column in ("death_call", "death_stage", "death_chars", "death_files", "deaths_in_a_row"):
        conn.execute(f"ALTER TABLE phases DROP COLUMN {column}")
    conn.execute("ALTER TABLE jobs DROP COLUMN held")
    conn.execute("DROP TABLE pruned_jobs")
    conn.execute("ALTER TABLE jobs DROP COLUMN verification")
    conn.execute("DROP INDEX idx_jobs_partition_state_created_at")
    conn.execute('ALTER TABLE jobs DROP COLUMN "partition"')
    for table in ("changelog_marks", "partitions", "store_meta"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert store.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "interruptions" in store.db["phases"].columns_dict
        assert "committed_at" in store.db["files"].columns_dict
        assert store.db["calls"].exists() and "not_before" in store.db["jobs"].columns_dict
        assert store.db["sync_points"].exists()
        assert "deaths_in_a_row" in store.db["phases"].columns_dict
        assert "held" in store.db["jobs"].columns_dict and store.db["pruned_jobs"].exists()
        assert "verification" in store.db["jobs"].columns_dict
        assert "partition" in store.db["jobs"].columns_dict and store.store_id()
        assert store.db["changelog_marks"].exists() and store.db["partitions"].exists()
    finally:
        store.close()


def test_deaths_count_only_phases_left_running(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    job = store.job("r1")
    assert store.record_death("r1", "ARCH", Point(1)) is None  # never started
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    death = store.record_death("r1", "ARCH", Point(1, chars=100))  # its process died
    assert death is not None and (death.total, death.in_a_row) == (1, 1)
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    store.interrupt_phase("r1", "ARCH")  # a clean shutdown
    assert store.record_death("r1", "ARCH", Point(1, chars=100)) is None
    assert store.deaths_in_a_row("r1", "ARCH") == 1


def test_deaths_count_in_a_row_only_at_one_point_without_progress(store):
    store.create_job("r1", REQUEST, "t:0:0", ["ARCH", "DB"])
    job = store.job("r1")

    def die(point: Point | None) -> int:
        store.start_phase(job, "DB", "2", JobState.DB)
        death = store.record_death("r1", "DB", point)
        assert death is not None
        return death.in_a_row

    assert die(Point(1, STREAMING, 1000)) == 1
    assert die(Point(1, STREAMING, 1000 + SAME_POINT_CHARS)) == 2  # the same point
    assert die(Point(1, WAITING)) == 2  # while waiting: neither for nor against
    assert die(Point(1, STREAMING, 1000)) == 3
    assert die(Point(1, STREAMING, 3000)) == 1  # elsewhere: an outside kill
    assert die(Point(1, STREAMING, 3000)) == 2
    store.stage_files("r1", "DB", [NewFile("db/schema.sql", "create table t (id int);")])
    assert die(Point(1, STREAMING, 3000)) == 1  # a file committed since: progress
    assert die(Point(2, STREAMING, 3000)) == 1  # another call
    assert die(Point(2, ANSWERED, 3000)) == 1  # past the answer
    assert die(Point(2, ANSWERED, 3000)) == 2
    assert die(None) == 2  # where is not known (no progress file): no evidence either
    assert die(Point(2, ANSWERED, 3000)) == 3
    assert store.phases("r1")[1].attempts == 12
