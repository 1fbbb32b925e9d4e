"""A phase that kills the daemon at every start fails after jobs.max_phase_crashes deaths,
instead of crash-looping."""

from __future__ import annotations

import time

from tests.chaos.test_points import hook
from tests.proc import wait_for

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
