"""Each store writer marks exactly the changelog keys it changed, in the job's partition,
in the transaction of the change; and nothing when the store's changelog is off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from daemon.contract import JobResumed
from daemon.progress import STREAMING, Point
from daemon.records import NewFile, PhaseOutcome
from daemon.states import JobState
from daemon.store import Store
from tests.support.changelog_states import (
    PLAN,
    arch_running,
    created,
    db_running,
    verified,
)


def nothing(store: Store) -> None:
    pass


@dataclass(frozen=True)
class Case:
    name: str
    before: Callable[[Store], None]
    write: Callable[[Store], object]
    keys: set[str]


def complete_arch(store: Store) -> None:
    outcome = PhaseOutcome(
        "ARCH", "1", files=[NewFile("a.py", "a"), NewFile("b.py", "b")], plan=PLAN
    )
    store.complete_phase(store.job("j1"), outcome, JobState.DB)


def complete_arch_last(store: Store) -> None:
    store.complete_phase(store.job("j1"), PhaseOutcome("ARCH", "1"), JobState.COMPLETED)


def fail_arch(store: Store) -> None:
    store.fail_phase(store.job("j1"), PhaseOutcome("ARCH", "1"), "boom", JobState.FAILED)


def hold(store: Store) -> None:
    store.hold("j1", "ARCH", "model access denied", 60.0)


def released(store: Store) -> None:
    arch_running(store)
    hold(store)


def prune(store: Store) -> None:
    store.mark_published(row.id for row in store.unpublished(100))
    assert store.prune_jobs(before=float("inf"), limit=10).jobs == 1


def first_row(store: Store) -> int:
    return store.unpublished(1)[0].id


def events(*seqs: int) -> set[str]:
    return {f"j1/event/{seq}" for seq in seqs}


CASES = [
    Case("create_job", nothing, created, {"j1", "j1/request", *events(1)}),
    Case(
        "start_phase",
        created,
        lambda s: s.start_phase(s.job("j1"), "ARCH", "1", JobState.ARCH),
        {"j1", "j1/phase/ARCH", *events(2)},
    ),
    Case("interrupt_phase", arch_running, lambda s: s.interrupt_phase("j1", "ARCH"), {"j1"}),
    Case("record_death", arch_running, lambda s: s.record_death("j1", "ARCH", None), {"j1"}),
    Case(
        "record_death at a point",
        arch_running,
        lambda s: s.record_death("j1", "ARCH", Point(1, STREAMING, 10)),
        {"j1"},
    ),
    Case("defer", arch_running, lambda s: s.defer("j1", "ARCH", 5.0), {"j1"}),
    Case("hold", arch_running, hold, {"j1"}),
    Case("release_held", released, lambda s: s.release_held(), {"j1"}),
    Case(
        "move",
        created,
        lambda s: s.move(s.job("j1"), JobState.CANCELLED, "cancel"),
        {"j1", *events(2)},
    ),
    Case("request_cancel", created, lambda s: s.request_cancel("j1"), {"j1"}),
    Case(
        "stage_files",
        arch_running,
        lambda s: s.stage_files("j1", "ARCH", [NewFile("a.py", "a"), NewFile("b/c.py", "c")]),
        {"j1/file/a.py", "j1/file/b/c.py"},
    ),
    Case("stage_plan", arch_running, lambda s: s.stage_plan("j1", PLAN), {"j1/plan"}),
    Case(
        "complete_phase",
        arch_running,
        complete_arch,
        {"j1", "j1/phase/ARCH", "j1/file/a.py", "j1/file/b.py", "j1/plan", *events(3)},
    ),
    Case(
        "complete_phase, the job ends",
        arch_running,
        complete_arch_last,
        {"j1", "j1/phase/ARCH", *events(3, 4)},
    ),
    Case("fail_phase", arch_running, fail_arch, {"j1", "j1/phase/ARCH", *events(3, 4)}),
    Case("end_job", db_running, lambda s: s.end_job("j1"), {"j1", "j1/phase/DB", *events(5)}),
    Case(
        "reopen",
        lambda s: (arch_running(s), fail_arch(s)),
        lambda s: s.reopen("j1", "r"),
        {"j1", *events(5)},
    ),
    Case(
        "announce_resumed",
        arch_running,
        lambda s: s.announce_resumed("restart"),
        {"j1", *events(3)},
    ),
    Case(
        "emit",
        created,
        lambda s: s.emit("j1", "j1", JobResumed(from_phase="ARCH", reason="r")),
        {"j1", *events(2)},
    ),
    Case(
        "mark_published",
        arch_running,
        lambda s: s.mark_published(row.id for row in s.unpublished(100)),
        events(1, 2),
    ),
    Case(
        "replace_payload",
        created,
        lambda s: s.replace_payload(first_row(s), s.unpublished(1)[0].payload),
        events(1),
    ),
    Case(
        "prune_jobs",
        lambda s: verified(s, "j1"),
        prune,
        {
            "j1",
            "j1/request",
            "j1/plan",
            *(f"j1/phase/{name}" for name in ("ARCH", "DB", "VERIFY")),
            *(f"j1/file/{path}" for path in ("README.md", "db/schema.sql", "db/seed.sql")),
            *events(*range(1, 9)),
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_writer_marks_exactly_its_keys(tmp_path, case):
    store = Store(tmp_path / "s.db", changelog=True)
    case.before(store)
    store.db.conn.execute("DELETE FROM changelog_marks")
    case.write(store)
    marks = store.marks()
    assert {mark.key for mark in marks} == case.keys
    assert {mark.partition for mark in marks} == {3}
    store.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_store_without_the_changelog_marks_nothing(tmp_path, case):
    store = Store(tmp_path / "s.db")
    case.before(store)
    case.write(store)
    assert store.marks() == []
    store.close()


def test_a_re_marked_key_moves_to_the_end(tmp_path):
    store = Store(tmp_path / "s.db", changelog=True)
    created(store)
    first = {mark.key: mark.id for mark in store.marks()}
    store.request_cancel("j1")
    again = store.marks()
    assert again[-1].key == "j1" and again[-1].id > max(first.values())
    assert [mark.key for mark in again] == ["j1/request", "j1/event/1", "j1"]
    store.close()


def test_a_write_that_fails_marks_nothing(tmp_path):
    store = Store(tmp_path / "s.db", changelog=True)
    created(store)
    before = store.marks()
    with pytest.raises(Exception, match="cannot interrupt ARCH"):
        store.interrupt_phase("j1", "ARCH")
    assert store.marks() == before
    store.close()
