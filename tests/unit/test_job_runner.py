"""The job runner in-process: a real store in tmp_path, phases from a script (or the real
phase runner over a scripted model), at the default settings unless a test says why not."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from daemon.contract import Usage
from daemon.errors import ModelAccessDenied, PhaseFailed, RetryableLLMError, RetryLater
from daemon.generation import PhaseRunner
from daemon.jobs import JobRunner, record_deaths
from daemon.progress import STREAMING, WAITING, NoProgress, Point, job_key
from daemon.records import PhaseOutcome
from daemon.settings import JobsSettings, load_settings
from daemon.states import JobState, PhaseStatus
from daemon.store import Store
from tests.support.fakes import ScriptedPhases
from tests.support.scripted_llm import Scripted
from tests.support.store_records import sample_request

BRANCHES = ["ARCH", "DB", "BE_CORE", "FE_SETUP"]  # after ARCH, three phases side by side


def runner(store, outputs, phases, progress=None, **jobs: Any) -> JobRunner:
    return JobRunner(store, phases, outputs, lambda: None, JobsSettings(**jobs), progress=progress)


def new_job(store: Store, planned: list[str], job_id: str = "j1") -> str:
    store.create_job(job_id, sample_request(job_id), "t:0:0", planned)
    return job_id


def events(store: Store, job_id: str = "j1") -> list[dict[str, Any]]:
    rows = store.db.conn.execute(
        "SELECT payload FROM outbox WHERE job_id = ? ORDER BY id", (job_id,)
    ).fetchall()
    found = [json.loads(payload) for (payload,) in rows]
    assert [e["seq"] for e in found] == list(range(1, len(found) + 1))  # no gap, no reuse
    return found


def steps(store: Store, job_id: str = "j1") -> list[tuple[str, str | None]]:
    return [(e["type"], e.get("phase")) for e in events(store, job_id)]


def statuses(store: Store, job_id: str = "j1") -> dict[str, PhaseStatus]:
    return store.phase_statuses(job_id)


async def test_a_job_runs_its_phases_in_order_and_commits_each(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH", "DB", "BE_CORE"])
    assert await runner(store, outputs, phases).run("j1") is JobState.COMPLETED
    assert phases.started == ["ARCH", "DB", "BE_CORE"]
    assert steps(store) == [
        ("job.accepted", None),
        *[(kind, name) for name in phases.started for kind in ("phase.started", "phase.completed")],
        ("job.completed", None),
    ]
    assert events(store)[-1]["status"] == "completed" and events(store)[-1]["files_total"] == 3
    assert set(statuses(store).values()) == {PhaseStatus.COMPLETED}
    assert len(phases.project_checks) == 1  # the project checks run once, as the job ends
    assert sorted(store.file_contents("j1")) == [
        "arch.txt",
        "backend/be_core.txt",
        "database/db.txt",
    ]


async def test_a_failed_phase_that_is_not_critical_leaves_the_job_partial(store, outputs):
    phases = ScriptedPhases({"DB": [PhaseFailed("DB: no valid answer")]})
    new_job(store, ["ARCH", "DB", "FE_SETUP"])
    assert await runner(store, outputs, phases).run("j1") is JobState.PARTIAL
    assert phases.started == ["ARCH", "DB", "FE_SETUP"]
    failed = next(e for e in events(store) if e["type"] == "phase.failed")
    assert failed["phase"] == "DB" and failed["error"] == "DB: no valid answer"
    assert events(store)[-1]["failed_phases"] == ["DB"]
    assert statuses(store)["DB"] is PhaseStatus.FAILED


async def test_a_cancel_before_the_start_runs_no_phase(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH", "DB"])
    store.request_cancel("j1")
    assert await runner(store, outputs, phases).run("j1") is JobState.CANCELLED
    assert phases.started == []
    assert steps(store) == [("job.accepted", None), ("job.completed", None)]
    assert events(store)[-1]["status"] == "cancelled"


async def test_a_cancel_during_a_phase_lets_it_commit_and_starts_no_other(store, outputs):
    phases = ScriptedPhases()
    arch = phases.gate("ARCH")
    new_job(store, ["ARCH", "DB"])
    task = asyncio.create_task(runner(store, outputs, phases).run("j1"))
    await phases.until_started("ARCH")
    store.request_cancel("j1")
    arch.set()
    assert await task is JobState.CANCELLED
    assert phases.started == ["ARCH"]
    assert statuses(store)["ARCH"] is PhaseStatus.COMPLETED
    assert steps(store)[-2:] == [("phase.completed", "ARCH"), ("job.completed", None)]


async def test_stop_after_phase_commits_the_running_phase_and_starts_no_other(store, outputs):
    phases = ScriptedPhases()
    arch = phases.gate("ARCH")
    new_job(store, ["ARCH", "DB"])
    jobs = runner(store, outputs, phases)
    task = asyncio.create_task(jobs.run("j1"))
    await phases.until_started("ARCH")
    jobs.stop_after_phase()
    arch.set()
    assert await task is JobState.DB  # the job waits at its next phase for the next start
    assert phases.started == ["ARCH"]
    assert statuses(store) == {"ARCH": PhaseStatus.COMPLETED, "DB": PhaseStatus.PENDING}
    assert "job.completed" not in [kind for kind, _ in steps(store)]


async def test_a_phase_stopped_from_outside_is_interrupted_not_dead(store, outputs):
    phases = ScriptedPhases()
    phases.gate("ARCH")
    new_job(store, ["ARCH"])
    task = asyncio.create_task(runner(store, outputs, phases).run("j1"))
    await phases.until_started("ARCH")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert statuses(store)["ARCH"] is PhaseStatus.INTERRUPTED
    assert store.running_phases() == [] and store.deaths_in_a_row("j1", "ARCH") == 0
    phases.gate("ARCH").set()  # the next start runs it again
    assert await runner(store, outputs, phases).run("j1") is JobState.COMPLETED
    assert [kind for kind, phase in steps(store) if phase == "ARCH"] == [
        "phase.started",
        "phase.started",
        "phase.completed",
    ]


def model_runner(store, outputs, provider, **jobs: Any) -> JobRunner:
    """The job runner over the real phase runner and call policy, on a scripted model."""
    settings = load_settings()
    phases = PhaseRunner(provider, settings, asyncio.Semaphore(1))
    return JobRunner(store, phases, outputs, lambda: None, settings.jobs, settings.llm)


async def test_a_retry_after_longer_than_allowed_puts_the_job_aside(store, outputs):
    # 120 s is over llm.max_retry_after_s (60 s by default): not worth holding the phase.
    refused = RetryableLLMError("429", kind="rate_limit", retry_after_s=120)
    new_job(store, ["ARCH", "DB"])
    before = time.time()
    assert await model_runner(store, outputs, Scripted(refused)).run("j1") is JobState.ARCH
    assert statuses(store)["ARCH"] is PhaseStatus.INTERRUPTED
    assert store.runnable_jobs(exclude=[], limit=10) == []
    (not_before,) = store.db.conn.execute("SELECT not_before FROM jobs").fetchone()
    assert before + 120 <= not_before <= time.time() + 120
    assert steps(store) == [("job.accepted", None), ("phase.started", "ARCH")]


async def test_a_model_access_denial_holds_every_job_without_calling_again(store, outputs):
    provider = Scripted(ModelAccessDenied("invalid x-api-key"))
    new_job(store, ["ARCH"], "j1")
    new_job(store, ["ARCH"], "j2")
    jobs = model_runner(store, outputs, provider)
    assert await jobs.run("j1") is JobState.ARCH
    assert await jobs.run("j2") is JobState.ARCH  # refused by the call policy, no call
    assert len(provider.calls) == 1
    assert all(statuses(store, j)["ARCH"] is PhaseStatus.INTERRUPTED for j in ("j1", "j2"))
    held = dict(store.db.conn.execute("SELECT job_id, held FROM jobs").fetchall())
    assert held == {"j1": "invalid x-api-key", "j2": "invalid x-api-key"}
    assert store.runnable_jobs(exclude=[], limit=10) == []
    assert store.release_held() == 2  # a restart lets them run at once
    assert store.runnable_jobs(exclude=[], limit=10) == ["j1", "j2"]
    assert "phase.failed" not in [kind for kind, _ in steps(store)]


async def test_the_budget_spent_fails_the_job_before_its_next_phase(store, outputs):
    spent = load_settings().llm.max_tokens_per_job  # the default, all of it in ARCH
    phases = ScriptedPhases({"ARCH": [Usage(input_tokens=spent, calls=1)]})
    new_job(store, ["ARCH", "DB", "FE_SETUP"])
    jobs = JobRunner(store, phases, outputs, lambda: None, llm=load_settings().llm)
    assert await jobs.run("j1") is JobState.FAILED
    assert phases.started == ["ARCH"]
    failed = next(e for e in events(store) if e["type"] == "phase.failed")
    assert failed["phase"] == "DB" and "max_tokens_per_job" in failed["error"]
    assert events(store)[-1]["status"] == "failed"
    assert statuses(store)["FE_SETUP"] is not PhaseStatus.COMPLETED


DIED_STREAMING = Point(1, STREAMING, 500)


def died_in(store: Store, phase: str, point: Point, times: int) -> NoProgress:
    """The phase left running ``times`` times by a process that died at ``point``; the
    deaths before the last are recorded as a start does. Returns the last one's progress."""
    progress = NoProgress()
    progress.previous[(job_key("j1"), phase)] = point
    for death in range(times):
        store.start_phase(store.job("j1"), phase, "1", JobState.ARCH)
        if death < times - 1:
            record_deaths(store, progress)
    return progress


async def test_a_phase_that_killed_the_daemon_three_times_in_a_row_fails(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH", "DB"])
    progress = died_in(store, "ARCH", DIED_STREAMING, times=3)  # jobs.max_phase_crashes
    assert await runner(store, outputs, phases, progress).run("j1") is JobState.FAILED
    assert phases.started == []
    failed = next(e for e in events(store) if e["type"] == "phase.failed")
    assert "died 3 times in a row" in failed["error"]
    assert "at character 500 of the answer" in failed["error"]


async def test_two_deaths_in_a_row_still_run_the_phase(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH"])
    progress = died_in(store, "ARCH", DIED_STREAMING, times=2)
    assert await runner(store, outputs, phases, progress).run("j1") is JobState.COMPLETED
    assert phases.started == ["ARCH"] and store.deaths_in_a_row("j1", "ARCH") == 2


async def test_deaths_while_the_phase_waited_do_not_count_against_it(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH"])
    progress = died_in(store, "ARCH", Point(1, WAITING), times=5)
    assert await runner(store, outputs, phases, progress).run("j1") is JobState.COMPLETED
    assert store.deaths_in_a_row("j1", "ARCH") == 0


def parallel(store, outputs, phases, progress=None) -> JobRunner:
    # The parallel execution is the setting under test here (the default is sequential).
    return runner(store, outputs, phases, progress, execution="parallel")


async def test_in_parallel_the_branches_after_arch_run_at_once(store, outputs):
    phases = ScriptedPhases()
    new_job(store, BRANCHES)
    assert await parallel(store, outputs, phases).run("j1") is JobState.COMPLETED
    assert phases.started[0] == "ARCH" and sorted(phases.started[1:]) == sorted(BRANCHES[1:])
    assert phases.most_at_once == 3
    kinds = steps(store)
    for name in BRANCHES:
        assert kinds.index(("phase.started", name)) < kinds.index(("phase.completed", name))
    assert kinds[-1] == ("job.completed", None)


async def test_in_parallel_a_phase_put_aside_lets_the_others_finish_and_starts_none(store, outputs):
    phases = ScriptedPhases({"DB": [RetryLater("wait", delay_s=120)]})
    gates = [phases.gate("BE_CORE"), phases.gate("FE_SETUP")]
    new_job(store, ["ARCH", "DB", "BE_CORE", "BE_UTILS", "FE_SETUP", "FE_CORE"])
    task = asyncio.create_task(parallel(store, outputs, phases).run("j1"))
    await phases.until_started("BE_CORE", "FE_SETUP")
    while statuses(store)["DB"] is not PhaseStatus.INTERRUPTED:
        await asyncio.sleep(0.001)
    for gate in gates:
        gate.set()
    assert not (await task).is_terminal
    assert sorted(phases.started) == ["ARCH", "BE_CORE", "DB", "FE_SETUP"]
    assert statuses(store) == {
        "ARCH": PhaseStatus.COMPLETED,
        "DB": PhaseStatus.INTERRUPTED,
        "BE_CORE": PhaseStatus.COMPLETED,
        "BE_UTILS": PhaseStatus.PENDING,  # ready, but the job is put aside
        "FE_SETUP": PhaseStatus.COMPLETED,
        "FE_CORE": PhaseStatus.PENDING,
    }
    assert store.runnable_jobs(exclude=[], limit=10) == []


async def test_in_parallel_a_cancel_waits_for_the_running_phases(store, outputs):
    phases = ScriptedPhases()
    gate = phases.gate("DB")
    new_job(store, ["ARCH", "DB", "BE_CORE", "BE_MODELS"])  # BE_MODELS needs DB
    task = asyncio.create_task(parallel(store, outputs, phases).run("j1"))
    await phases.until_started("DB", "BE_CORE")
    store.request_cancel("j1")
    gate.set()
    assert await task is JobState.CANCELLED
    assert sorted(phases.started) == ["ARCH", "BE_CORE", "DB"]
    assert statuses(store)["DB"] is PhaseStatus.COMPLETED  # committed before the job ended
    assert steps(store)[-1] == ("job.completed", None)


async def test_in_parallel_phases_found_dead_run_one_at_a_time(store, outputs):
    phases = ScriptedPhases()
    new_job(store, ["ARCH", "DB", "FE_SETUP"])
    job = store.job("j1")
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    store.complete_phase(job, PhaseOutcome("ARCH", "1"), JobState.DB)
    progress = NoProgress()
    for name in ("DB", "FE_SETUP"):  # both running when the last process died
        store.start_phase(job, name, "2", JobState.DB)
        progress.previous[(job_key("j1"), name)] = DIED_STREAMING
    assert await parallel(store, outputs, phases, progress).run("j1") is JobState.COMPLETED
    assert sorted(phases.started) == ["DB", "FE_SETUP"] and phases.most_at_once == 1
