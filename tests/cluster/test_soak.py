"""The cluster soak (``make chaos``): three daemons under a stream of keyed requests; every
few seconds a random live daemon is SIGKILLed (now and then SIGSTOPped past its session,
then SIGCONTed) and started again on its store after a while, until
``CODEGEND_CHAOS_KILLS`` kills (100 in ``make chaos``). Then every job completes with the
tier's invariants: one job per request_id, one event_id per seq and per completed phase,
seq 1..n, and no model call for a file already committed (docs/cluster-design.md 7.3).

It runs only when asked for (marker ``soak``): ``make test`` deselects it.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.cluster.harness import assert_none, job_problems, repeated_call_problems

pytestmark = [pytest.mark.cluster, pytest.mark.soak]

KILLS = int(os.environ.get("CODEGEND_CHAOS_KILLS", "10"))
UNFINISHED_TARGET = 6  # requests are sent so that about this many jobs are under way
FINISH_TIMEOUT_S = 180.0


@pytest.mark.timeout(1800)
def test_kill_a_random_daemon_again_and_again(make_cluster):
    harness = make_cluster()
    harness.start_all()
    rng = random.Random(int(os.environ.get("CODEGEND_CHAOS_SEED", "7")))
    kills = pauses = 0
    down: dict[int, float] = {}  # daemon -> when to start it again
    started = time.monotonic()
    while kills < KILLS:
        unfinished = len(set(harness.requests) - harness.completed())
        if unfinished < UNFINISHED_TARGET:
            harness.submit(UNFINISHED_TARGET - unfinished)
        time.sleep(rng.uniform(3.0, 8.0))
        now = time.monotonic()
        for i, at in list(down.items()):
            if at <= now:
                harness.start(i)
                del down[i]
        live = [m.index for m in harness.members if m.alive]
        if len(live) < 2:
            continue  # one daemon always runs, so the jobs go on between kills
        victim = rng.choice(live)
        if rng.random() < 0.15:
            # a process frozen past its session (a stalled VM), then thawed: a zombie
            harness.pause(victim)
            time.sleep(rng.uniform(4.0, 7.0))
            harness.resume(victim)
            pauses += 1
        else:
            harness.kill(victim)
            down[victim] = time.monotonic() + rng.uniform(0.0, 5.0)
        kills += 1
    for i in list(down):
        harness.start(i)
    missing = harness.wait_completed(FINISH_TIMEOUT_S)
    events = harness.events()
    problems = [f"{job}: no job.completed" for job in sorted(missing)]
    problems += job_problems(events, harness.requests)
    problems += repeated_call_problems(events, harness.server, harness.requests)
    distinct = {p.event.event_id for p in events}
    print(
        f"\ncluster soak: {kills} kills ({pauses} of them pauses) in "
        f"{time.monotonic() - started:.0f} s, {len(harness.requests)} jobs, "
        f"{len(events)} events on the topic ({len(distinct)} distinct), "
        f"{len(harness.server.requests)} model calls"
    )
    assert_none(f"after {kills} kills of random daemons", problems, harness)
