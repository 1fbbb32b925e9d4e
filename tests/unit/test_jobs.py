"""The job runner and the scheduler in-process: a real store in tmp_path, a scripted model
of our own interface; no broker, no network."""

from __future__ import annotations

import asyncio
import json

from daemon.contract import GenerationRequest
from daemon.errors import StoreFull
from daemon.generation import PhaseRunner
from daemon.jobs import JobRunner
from daemon.metrics import Metrics
from daemon.outputs import OutputWriter
from daemon.scheduler import Scheduler
from daemon.settings import load_settings
from daemon.states import JobState, plan_phases
from daemon.store import Store
from tests.support.scripted_llm import Scripted, answer

REQUEST = GenerationRequest.model_validate(
    {"request_id": "j1", "project_name": "p", "mockup": {"kind": "text", "description": "d"}}
)


def make_runner(tmp_path, provider, metrics=None):
    store = Store(tmp_path / "s.db")
    settings = load_settings(output={"dir": tmp_path / "out"})
    phases = PhaseRunner(provider, settings, asyncio.Semaphore(1), metrics=metrics)
    outputs = OutputWriter(tmp_path / "out")
    runner = JobRunner(store, phases, outputs, lambda: None, metrics=metrics)
    return store, runner, outputs


def event_types(store, job_id):
    rows = store.db.conn.execute(
        "SELECT type, payload FROM outbox WHERE job_id = ? ORDER BY seq", (job_id,)
    ).fetchall()
    return [(kind, json.loads(payload)) for kind, payload in rows]


class Broken:
    """A provider whose code fails the way a bug would."""

    async def complete(self, call, on_text):
        raise ValueError("a bug in the provider")

    async def aclose(self):
        pass


async def test_an_internal_error_in_a_phase_fails_the_phase_with_its_cause(tmp_path):
    store, runner, outputs = make_runner(tmp_path, Broken())
    store.create_job("j1", REQUEST, "t:0:0", plan_phases(None))
    try:
        assert await runner.run("j1") is JobState.FAILED  # ARCH is critical
        events = event_types(store, "j1")
        failed = [e for kind, e in events if kind == "phase.failed"]
        assert failed[0]["phase"] == "ARCH"
        assert "internal error: ValueError: a bug in the provider" in failed[0]["error"]
        assert events[-1][0] == "job.completed" and events[-1][1]["status"] == "failed"
    finally:
        outputs.close()
        store.close()


async def test_a_job_that_breaks_the_runner_ends_failed_and_announced(tmp_path):
    store, runner, outputs = make_runner(tmp_path, Scripted())
    store.create_job("j1", REQUEST, "t:0:0", ["ARCH", "NO_SUCH_PHASE"])
    scheduler = Scheduler(store, runner)
    try:
        scheduler._fill()
        while scheduler.running:
            await asyncio.sleep(0.01)
        assert store.job("j1").state is JobState.FAILED
        assert event_types(store, "j1")[-1][0] == "job.completed"
        scheduler._fill()
        assert scheduler.running == []  # not run again in this process
    finally:
        outputs.close()
        store.close()


async def test_a_full_disk_puts_the_job_aside_and_says_so(tmp_path):
    provider = Scripted(answer({"files": [], "complete": True}))
    metrics = Metrics()
    store, runner, outputs = make_runner(tmp_path, provider, metrics)
    store.create_job("j1", REQUEST, "t:0:0", ["ARCH"])

    def full(*args, **kwargs):
        raise StoreFull("store: database or disk is full")

    store.start_phase = full
    scheduler = Scheduler(store, runner, readiness=metrics.readiness)
    try:
        scheduler._fill()
        while scheduler.running:
            await asyncio.sleep(0.01)
        assert "disk is full" in (metrics.readiness.reason() or "")
        assert store.job("j1").state is JobState.PENDING  # nothing lost, nothing failed
        scheduler._fill()
        assert scheduler.running == []  # cooling down before the next try
    finally:
        outputs.close()
        store.close()
