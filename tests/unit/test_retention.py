"""Store hygiene: the store's file modes, and retention (prune) of finished jobs and
published events, never of anything unpublished or unfinished."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pytest

from daemon.contract import JobRejected, JobResumed
from daemon.errors import ConfigError, JobNotFound
from daemon.retention import (
    EVENTS_PER_TRANSACTION,
    JOBS_PER_TRANSACTION,
    Pruner,
    parse_duration,
    prune,
)
from daemon.states import JobState
from daemon.store import Pruned, Store
from tests.support.store_records import DAY_S, finished_job, publish_job, sample_request


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    previous = os.umask(0o022)  # the usual umask: files 0644, folders 0755 by default
    yield
    os.umask(previous)


def test_a_new_store_is_private_whatever_the_umask(tmp_path, loose_umask):
    path = tmp_path / "new" / "codegend.db"
    store = Store(path)
    try:
        store.emit("j", None, JobRejected(error="x"))  # the WAL and its index exist now
        assert _mode(path.parent) == 0o700
        assert _mode(path) == 0o600
        assert _mode(f"{path}-wal") == 0o600
        assert _mode(f"{path}-shm") == 0o600
    finally:
        store.close()


def test_an_existing_folder_keeps_its_mode(tmp_path, loose_umask):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    Store(folder / "codegend.db").close()
    assert _mode(folder) == 0o750
    assert _mode(folder / "codegend.db") == 0o600


def _count(store: Store, table: str, job_id: str) -> int:
    query = f"SELECT count(*) FROM {table} WHERE job_id = ?"
    return store.db.conn.execute(query, (job_id,)).fetchone()[0]


def test_prune_deletes_old_finished_jobs_and_published_events_only(tmp_path):
    store = Store(tmp_path / "s.db")
    now = time.time()
    old, before = now - 40 * DAY_S, now - 30 * DAY_S
    finished_job(store, "old-done")
    finished_job(store, "old-failed", JobState.FAILED)
    finished_job(store, "new-done")
    finished_job(store, "old-unpublished")
    store.create_job("old-running", sample_request("old-running"), "t", ["ARCH", "DB"])
    store.start_phase(store.job("old-running"), "ARCH", "1", JobState.ARCH)
    store.record_call(_call("old-done"))
    for job_id in ("old-done", "old-failed", "old-unpublished", "old-running"):
        publish_job(store, job_id, old)
    publish_job(store, "new-done", now)
    # a late event of an old finished job, not yet published: that job stays, whole
    store.emit("old-unpublished", "old-unpublished", JobResumed(from_phase="ARCH", reason="r"))
    assert _count(store, "calls", "old-done") == 1

    dry = store.prunable(before)
    pruned = prune(store, before)
    assert dry == pruned
    assert pruned.jobs == 2
    assert {row["job_id"] for row in store.jobs()} == {"new-done", "old-unpublished", "old-running"}
    for gone in ("old-done", "old-failed"):
        with pytest.raises(JobNotFound):
            store.job(gone)
        for table in ("phases", "files", "calls", "outbox"):
            assert _count(store, table, gone) == 0, table
    assert len(store.files("old-unpublished")) == 1 and len(store.files("new-done")) == 1
    # events: the old published ones went; the unpublished one and the recent ones stayed
    assert [row.job_id for row in store.unpublished(100)] == ["old-unpublished"]
    assert _count(store, "outbox", "old-unpublished") == 1
    assert _count(store, "outbox", "old-running") == 0
    assert _count(store, "outbox", "new-done") == 4
    assert _count(store, "phases", "old-running") == 2  # an unfinished job keeps everything
    assert pruned.events == 4 + 4 + 4 + 2  # two pruned jobs', and the older events of two others
    assert prune(store, before) == Pruned()
    # a request redelivered after its job was pruned is still a duplicate
    assert not store.create_job("old-done", sample_request("old-done"), "t", ["ARCH"])
    store.close()


def _call(job_id: str):
    from daemon.contract import Usage
    from daemon.records import CallRecord

    return CallRecord(job_id, "ARCH", 1, "m", 100, "end_turn", None, Usage(), time.time(), 1.0)


def test_seq_and_row_ids_go_on_after_a_prune(tmp_path):
    store = Store(tmp_path / "s.db")
    finished_job(store, "a")
    finished_job(store, "b")
    last_id = max(row.id for row in store.unpublished(100))
    old = time.time() - 40 * DAY_S
    publish_job(store, "a", old)
    publish_job(store, "b", old)
    assert prune(store, time.time() - 30 * DAY_S) == Pruned(jobs=2, events=7)
    newest = store.db.conn.execute("SELECT id, job_id, seq FROM outbox").fetchall()
    assert newest == [(last_id, "b", 4)]  # the newest row stays: ids never restart
    event = store.emit("b", "b", JobResumed(from_phase="ARCH", reason="r"))
    assert event.seq == 5  # b's seq counter was kept
    assert store.unpublished(10)[0].id == last_id + 1
    store.close()


def test_prune_works_in_small_transactions(tmp_path):
    store = Store(tmp_path / "s.db")
    old = time.time() - 40 * DAY_S
    jobs = JOBS_PER_TRANSACTION * 2 + 3
    for index in range(jobs):
        finished_job(store, f"j{index}")
        publish_job(store, f"j{index}", old)
    for _ in range(EVENTS_PER_TRANSACTION * 2 + 5):
        store.emit("noisy", None, JobRejected(error="x"))
    publish_job(store, "noisy", old)
    calls: list[tuple[str, int, float]] = []
    prune_jobs, prune_events = store.prune_jobs, store.prune_events

    def jobs_step(before: float, limit: int) -> Pruned:
        started = time.perf_counter()
        done = prune_jobs(before, limit)
        calls.append(("jobs", done.jobs, time.perf_counter() - started))
        return done

    def events_step(before: float, limit: int) -> int:
        started = time.perf_counter()
        done = prune_events(before, limit)
        calls.append(("events", done, time.perf_counter() - started))
        return done

    store.prune_jobs = jobs_step  # type: ignore[method-assign]
    store.prune_events = events_step  # type: ignore[method-assign]
    total = asyncio.run(Pruner(store, retention_days=30).prune_once())
    assert total.jobs == jobs
    assert total.events == jobs * 4 + EVENTS_PER_TRANSACTION * 2 + 4  # the newest row stays
    job_steps = [n for kind, n, _ in calls if kind == "jobs" and n]
    event_steps = [n for kind, n, _ in calls if kind == "events" and n]
    assert len(job_steps) >= 3 and max(job_steps) <= JOBS_PER_TRANSACTION
    assert len(event_steps) >= 3 and max(event_steps) <= EVENTS_PER_TRANSACTION
    assert max(seconds for _, _, seconds in calls) < 0.5
    store.close()


def test_durations():
    assert parse_duration("30d") == 30 * DAY_S
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration("2w") == 14 * DAY_S
    assert parse_duration("1.5") == 1.5 * DAY_S
    for bad in ("", "soon", "-1d", "3y"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
