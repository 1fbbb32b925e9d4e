"""The scheduler in-process over a real store in tmp_path and the job runner, with phases
from a script; at the default settings unless a test says why not."""

from __future__ import annotations

import asyncio

import daemon.scheduler as scheduling
from daemon.errors import StoreFull
from daemon.jobs import JobRunner
from daemon.metrics import Metrics
from daemon.scheduler import Scheduler
from daemon.settings import JobsSettings
from daemon.states import JobState, PhaseStatus
from daemon.store import Store
from tests.support.fakes import ScriptedPhases
from tests.support.store_records import sample_request

MAX_CONCURRENT = JobsSettings().max_concurrent  # 4


def jobs(store: Store, count: int, planned: list[str]) -> list[str]:
    ids = [f"j{n}" for n in range(count)]
    for job_id in ids:
        store.create_job(job_id, sample_request(job_id), "t", planned)
    return ids


def states(store: Store) -> dict[str, str]:
    return {row["job_id"]: row["state"] for row in store.jobs()}


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


async def test_it_keeps_max_concurrent_jobs_running_oldest_first(store, outputs):
    phases = ScriptedPhases()
    gate = phases.gate("ARCH")
    ids = jobs(store, MAX_CONCURRENT + 2, ["ARCH"])
    scheduler = Scheduler(store, JobRunner(store, phases, outputs, lambda: None))
    loop = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: len(phases.started) == MAX_CONCURRENT)
        assert scheduler.running == ids[:MAX_CONCURRENT]
        await asyncio.sleep(0.05)
        assert len(phases.started) == MAX_CONCURRENT  # the rest wait in the store
        gate.set()
        # a job that ends makes room at once, well within the scheduler's 1 s poll
        await until(lambda: set(states(store).values()) == {"COMPLETED"}, timeout_s=0.5)
        assert len(phases.started) == len(ids)
    finally:
        await scheduler.drain(0)
        await loop


async def test_a_job_stopped_by_a_full_disk_cools_down_then_runs(store, outputs, monkeypatch):
    # The cooling lasts 5 s (STORE_FULL_RETRY_S): too long to wait for in a unit test.
    monkeypatch.setattr(scheduling, "STORE_FULL_RETRY_S", 0.1)
    metrics, phases = Metrics(), ScriptedPhases()
    jobs(store, 1, ["ARCH"])
    start_phase = store.start_phase
    full = [StoreFull("store: database or disk is full")]

    def start_unless_full(*args, **kwargs):
        if full:
            raise full.pop()
        return start_phase(*args, **kwargs)

    store.start_phase = start_unless_full
    scheduler = Scheduler(
        store, JobRunner(store, phases, outputs, lambda: None), readiness=metrics.readiness
    )
    scheduler._fill()
    await until(lambda: not scheduler.running)
    assert "disk is full" in (metrics.readiness.reason() or "")
    assert states(store) == {"j0": "PENDING"} and phases.started == []
    scheduler._fill()
    assert scheduler.running == []  # cooling down
    await asyncio.sleep(0.1)
    scheduler._fill()
    await until(lambda: not scheduler.running)
    assert states(store) == {"j0": "COMPLETED"} and metrics.readiness.reason() is None


async def test_drain_lets_running_phases_commit_and_starts_no_more(store, outputs):
    phases = ScriptedPhases()
    gate = phases.gate("ARCH")
    jobs(store, 2, ["ARCH", "DB"])
    scheduler = Scheduler(store, JobRunner(store, phases, outputs, lambda: None))
    loop = asyncio.create_task(scheduler.run())
    await until(lambda: len(phases.started) == 2)
    draining = asyncio.create_task(scheduler.drain(grace_s=5))  # jobs.shutdown_grace_s: 30
    await asyncio.sleep(0.01)
    gate.set()
    await draining
    await loop
    assert phases.started == ["ARCH", "ARCH"] and scheduler.running == []
    for job_id in ("j0", "j1"):
        assert store.phase_statuses(job_id) == {
            "ARCH": PhaseStatus.COMPLETED,
            "DB": PhaseStatus.PENDING,
        }


async def test_drain_cancels_what_outlasts_the_grace_period(store, outputs):
    phases = ScriptedPhases()
    phases.gate("ARCH")  # never opened
    jobs(store, 1, ["ARCH"])
    scheduler = Scheduler(store, JobRunner(store, phases, outputs, lambda: None))
    scheduler._fill()
    await until(lambda: phases.started == ["ARCH"])
    # a short grace, as the daemon would give with jobs.shutdown_grace_s = 0.05
    await scheduler.drain(grace_s=0.05)
    assert store.phase_statuses("j0") == {"ARCH": PhaseStatus.INTERRUPTED}
    assert store.job("j0").state is JobState.ARCH and store.running_phases() == []
    await asyncio.wait_for(scheduler.run(), 0.1)  # no longer accepting: returns at once
    assert scheduler.running == []
