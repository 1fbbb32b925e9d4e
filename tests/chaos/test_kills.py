"""SIGKILL at random moments, many times: nothing lost, nothing committed paid for twice.

``CODEGEND_CHAOS_KILLS`` sets how many kills (8 in ``make test``, 6 jobs: the README's promise at
the default settings; ``make chaos`` runs 100);
``CODEGEND_CHAOS_SEED`` replays a run's kill moments. The daemons inherit the environment,
so ``CODEGEND_JOBS__EXECUTION=parallel`` runs the same chaos in parallel mode.
"""

from __future__ import annotations

import os
import random
import time

import pytest

KILLS = int(os.environ.get("CODEGEND_CHAOS_KILLS", "8"))
SEED = int(os.environ.get("CODEGEND_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))
JOBS_IN_FLIGHT = 4
QUEUED = 2  # jobs waiting in the store, so a restart never idles while intake rejoins


@pytest.mark.timeout(90 + 10 * KILLS)
def test_random_kills_lose_nothing_and_repeat_no_committed_file(make_chaos):
    began = time.monotonic()
    rng = random.Random(SEED)
    print(f"\nchaos: {KILLS} kills, seed {SEED} (CODEGEND_CHAOS_SEED replays it)")
    chaos = make_chaos(CODEGEND_JOBS__MAX_CONCURRENT=str(JOBS_IN_FLIGHT))
    chaos.submit(JOBS_IN_FLIGHT + QUEUED)
    for _ in range(KILLS):
        missing = JOBS_IN_FLIGHT + QUEUED - chaos.unfinished()
        if missing > 0:  # keep every daemon busy: a kill should find work in flight
            chaos.submit(missing)
        process = chaos.spawn()
        if rng.random() < 0.2:  # now and then during start-up
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            chaos.wait_ready(process)
            time.sleep(rng.uniform(0.1, 2.5))
        assert chaos.kill(process) == -9
    chaos.finish()
    figures = chaos.check()
    print(figures.summary(wall_s=time.monotonic() - began))
    assert figures.kills == KILLS
    # check() asserts that only the cut tails of broken calls were sent again
    assert figures.respent_file_chars <= figures.cut_tail_chars
