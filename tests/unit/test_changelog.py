"""The changelog's records: every marked key of a store, built into records and applied to
a fresh store, gives the same job; phase.completed events travel without their files'
contents and come back byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from daemon import changelog
from daemon.jobs import JobRunner
from daemon.progress import STREAMING, Point
from daemon.records import NewFile
from daemon.settings import JobsSettings
from daemon.states import JobState
from daemon.store import Store
from tests.support.changelog_states import arch_done, arch_running, created, db_running, verified
from tests.support.fakes import ScriptedPhases
from tests.support.store_dump import canonical_dump
from tests.support.store_records import finished_job, job_with_four_events, sample_request


def records(store: Store) -> list[tuple[str, bytes | None]]:
    """What the relay would send now: every marked key's record, in mark order."""
    return [(mark.key, changelog.build(store, mark.key)) for mark in store.marks()]


def copied(source: Store, tmp_path, name: str = "copy.db") -> Store:
    copy = Store(tmp_path / name)
    changelog.apply_all(copy, records(source))
    return copy


def held_and_dead(store: Store) -> None:
    db_running(store)
    store.record_death("j1", "DB", Point(1, STREAMING, 4096))
    store.start_phase(store.job("j1"), "DB", "2", JobState.DB)
    store.stage_files("j1", "DB", [NewFile("db/schema.sql", "create table t;\n")])
    store.hold("j1", "DB", "model access denied", 60.0)


def published_and_pruned(store: Store) -> None:
    verified(store)
    store.mark_published(row.id for row in store.unpublished(100))
    store.prune_jobs(before=float("inf"), limit=10)


def failed_and_reopened(store: Store) -> None:
    job_with_four_events(store, "j1", error="boom")
    store.end_job("j1")
    store.reopen("j1", "operator")
    store.request_cancel("j1")


STATES: dict[str, Callable[[Store], object]] = {
    "created": created,
    "ARCH running": arch_running,
    "ARCH done": arch_done,
    "DB running": db_running,
    "held after a death": held_and_dead,
    "verified": verified,
    "finished": lambda store: finished_job(store, "j1"),
    "failed and reopened": failed_and_reopened,
    "published and pruned": published_and_pruned,
}


@pytest.mark.parametrize("state", STATES.values(), ids=list(STATES))
def test_records_applied_to_a_fresh_store_give_the_same_job(tmp_path, state):
    source = Store(tmp_path / "s.db", changelog=True)
    state(source)
    copy = copied(source, tmp_path)
    assert canonical_dump(copy, "j1") == canonical_dump(source, "j1")
    assert copy.marks() == []  # what comes from the changelog is not sent again
    changelog.apply_all(copy, records(source))  # a second restore changes nothing
    assert canonical_dump(copy, "j1") == canonical_dump(source, "j1")


def test_records_sent_pass_by_pass_keep_a_copy_up_to_date(tmp_path):
    source = Store(tmp_path / "s.db", changelog=True)
    copy = Store(tmp_path / "copy.db")
    created(source)
    steps = [
        lambda: source.start_phase(source.job("j1"), "ARCH", "1", JobState.ARCH),
        lambda: source.stage_files("j1", "ARCH", [NewFile("a.txt", "a")]),
        lambda: source.mark_published(row.id for row in source.unpublished(1)),
        lambda: source.interrupt_phase("j1", "ARCH"),
    ]
    for step in [lambda: None, *steps]:
        step()
        changelog.apply_all(copy, records(source))
        source.db.conn.execute("DELETE FROM changelog_marks")  # sent
        assert canonical_dump(copy, "j1") == canonical_dump(source, "j1")


async def test_a_job_run_to_its_end_is_copied_whole(tmp_path, outputs):
    source = Store(tmp_path / "s.db", changelog=True)
    source.create_job("j1", sample_request("j1"), "t:1:0", ["ARCH", "DB", "BE_CORE"])
    runner = JobRunner(source, ScriptedPhases(), outputs, lambda: None, JobsSettings())
    assert await runner.run("j1") is JobState.COMPLETED
    assert canonical_dump(copied(source, tmp_path), "j1") == canonical_dump(source, "j1")


def test_a_phase_completed_record_carries_no_file_contents(tmp_path):
    source = Store(tmp_path / "s.db", changelog=True)
    arch_done(source)
    value = changelog.build(source, "j1/event/3")
    assert value is not None
    record = json.loads(value)
    assert record["contents"] == "files" and record["type"] == "phase.completed"
    assert [file["content"] for file in record["payload"]["files"]] == [""]
    original = source.unpublished_event_row("j1", 3)
    copy = copied(source, tmp_path)
    assert copy.unpublished_event_row("j1", 3) == original  # byte for byte


def test_an_event_whose_file_was_rewritten_comes_back_without_contents(tmp_path):
    source = Store(tmp_path / "s.db", changelog=True)
    arch_done(source)
    event_records = records(source)
    source.stage_files("j1", "ARCH", [NewFile("README.md", "# rewritten\n")])
    copy = Store(tmp_path / "copy.db")
    changelog.apply_all(copy, [*event_records, *records(source)])
    event = json.loads(copy.unpublished_event_row("j1", 3)["payload"])
    assert [file["content"] for file in event["files"]] == [""]
    assert event["warnings"][-1].startswith("file contents left out: README.md was rewritten")


def test_a_job_state_record_and_its_tombstones(tmp_path):
    store = Store(tmp_path / "s.db", changelog=True)
    db_running(store)
    store.record_death("j1", "DB", Point(2, STREAMING, 4096))
    state = json.loads(changelog.build(store, "j1") or b"")
    assert state["v"] == 1 and state["partition"] == 3 and state["state"] == "DB"
    assert state["last_seq"] == 4 and state["planned"] == ["ARCH", "DB"]
    assert state["phases"]["DB"] == {
        "status": "interrupted",
        "attempts": 1,
        "interruptions": 1,
        "deaths_in_a_row": 1,
        "death": [2, STREAMING, 4096, 0],
    }
    assert changelog.build(store, "j1/file/no/such.txt") is None
    store.mark_published(row.id for row in store.unpublished(100))
    assert changelog.build(store, "j1/event/1") is None
    assert changelog.build(store, "nobody") is None


@pytest.mark.parametrize("key", ["~owner", "j1/", "j1/phase", "j1/notes/x", "/request"])
def test_other_keys_are_refused(store, key):
    with pytest.raises(ValueError, match="not a job's changelog key"):
        changelog.build(store, key)
