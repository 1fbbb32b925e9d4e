"""A phase that kills the daemon at every start fails after jobs.max_phase_crashes deaths,
instead of crash-looping."""

from __future__ import annotations

import asyncio
import time

from tests.chaos.harness import hook
from tests.support.processes import wait_for
from tests.support.topics import raw_events

MAX_CRASHES = 2


def test_a_phase_that_kills_every_start_fails_the_job(make_chaos):
    chaos = make_chaos(
        latency_s=(0.01, 0.05),
        chunk_delay_s=0.002,
        CODEGEND_JOBS__MAX_PHASE_CRASHES=str(MAX_CRASHES),
    )
    chaos.submit(1)
    armed = hook("mid_stream", 1)  # every start dies in its first streamed delta: ARCH's
    for _ in range(MAX_CRASHES):
        assert chaos.wait_exit(chaos.spawn(**armed)) == -9, chaos.log_tail()
    process = chaos.start(**armed)  # still armed: it must not stream ARCH again
    wait_for(lambda: chaos.states().get("p001") == "FAILED" and chaos.backlog() == 0, 30)
    time.sleep(2)  # and it stays up, serving
    assert process.poll() is None, chaos.log_tail()
    assert chaos.stop(process) == 0
    chaos.check(status="failed")
    assert len(chaos.server.calls_for("ARCH")) == MAX_CRASHES
    events = chaos.events["chaos-p001"]
    failed = [e for e in events if e.type == "phase.failed"]
    assert [e.phase for e in failed] == ["ARCH"]
    assert f"died {MAX_CRASHES} times" in failed[0].error and "max_phase_crashes" in failed[0].error
    assert [e.type for e in events].count("job.resumed") == MAX_CRASHES
    assert events[-1].failed_phases == ["ARCH"]


def test_a_poison_job_does_not_take_a_neighbour_down_with_it(make_chaos):
    max_crashes = 3
    chaos = make_chaos(
        latency_s=(0.05, 0.1),
        # paced so that a loaded machine does not hand the daemon several deltas at once:
        # the poison kills at its first one, and the point must be the same each time
        chunk_delay_s=0.02,
        CODEGEND_JOBS__MAX_PHASE_CRASHES=str(max_crashes),
        CODEGEND_JOBS__MAX_CONCURRENT="2",
    )
    chaos.submit(2)  # p001 kills the daemon at every start; p002 runs beside it
    armed = {**hook("mid_stream", 1), "CODEGEND_CHAOS_JOB": "p001"}
    deaths = 0
    while chaos.states().get("p001") != "FAILED":
        process = chaos.spawn(**armed)
        wait_for(
            lambda p=process: p.poll() is not None or chaos.states().get("p001") == "FAILED", 60
        )
        if process.poll() is None:
            break
        assert process.returncode == -9, chaos.log_tail()
        deaths += 1
        assert deaths <= max_crashes, "the poison job kept killing the daemon"
    wait_for(lambda: chaos.states().get("p002") == "COMPLETED" and chaos.backlog() == 0, 60)
    assert chaos.stop(process) == 0
    assert deaths == max_crashes
    events = {e.event_id: e for e in asyncio.run(raw_events(chaos.settings, 10))}.values()
    poison = sorted((e for e in events if e.job_id == "chaos-p001"), key=lambda e: e.seq)
    failed = [e for e in poison if e.type == "phase.failed"]
    assert [e.phase for e in failed] == ["ARCH"] and "max_phase_crashes" in failed[0].error
    assert poison[-1].type == "job.completed" and poison[-1].status == "failed"
    neighbour = sorted((e for e in events if e.job_id == "chaos-p002"), key=lambda e: e.seq)
    assert neighbour[-1].type == "job.completed" and neighbour[-1].status == "completed"
    assert not [e for e in neighbour if e.type == "phase.failed"]
