"""Three daemons in one group share the requests; the jobs of one that is killed, restarted
or stopped go on elsewhere, once each (docs/cluster-design.md section 7.2).

Every daemon is a real ``codegend run`` process with its own store; the invariants are
read from the raw events topic, the Messages API server's request log and the stores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.harness import (
    ClusterHarness,
    Published,
    assert_none,
    cluster,
    distinct,
    phase_started_problems,
    silence_problems,
)
from tests.support.processes import codegend, wait_for

pytestmark = pytest.mark.cluster

# Enough for every job to end after a move: six phases of about a second, the jobs of
# the dead daemon queued behind those of their new owner (jobs.max_concurrent = 2), and a
# session timeout (3 s) before they move.
FINISH_TIMEOUT_S = 60.0
# How long a restarted daemon is watched after the group settled: two session timeouts,
# so the rebalance its join started is over and a model call it made has been answered.
QUIET_S = 6.0


@dataclass
class KillRun:
    cluster: ClusterHarness
    victim: int
    killed_at: float
    moved: set[str]  # the jobs the victim had unfinished when it died


@pytest.fixture(scope="module")
def killed_for_good(tmp_path_factory, kafka_bootstrap) -> Iterator[KillRun]:
    """Six keyed jobs on three daemons; once every daemon has a phase running (and three
    completed, so the victim has committed work for its jobs' new owner to restore), SIGKILL
    the one with the most running jobs; then wait (bounded) for every job to end."""
    with cluster(tmp_path_factory.mktemp("killed"), kafka_bootstrap) as run:
        run.start_all()
        run.submit(6)
        running = run.wait_all_running(completed=3)
        victim = max(running, key=lambda i: (len(running[i]), -i))
        killed_at = run.kill(victim)
        moved = run.members[victim].unfinished_jobs()
        assert moved, f"daemon {victim} had no unfinished job when killed: {running}"
        run.wait_completed(FINISH_TIMEOUT_S)
        yield KillRun(run, victim, killed_at, moved)


@pytest.mark.timeout(150)
def test_kill_one_for_good(killed_for_good):
    run = killed_for_good
    assert not run.cluster.members[run.victim].alive
    run.cluster.check(
        run.moved,
        run.killed_at,
        f"daemon {run.victim} killed for good, its jobs {', '.join(sorted(run.moved))} to move",
    )


@pytest.mark.timeout(90)
def test_killed_daemon_restarts_silent(killed_for_good):
    run = killed_for_good
    harness = run.cluster
    member = harness.members[run.victim]
    before = harness.events()
    unfinished = sorted(set(harness.requests) - harness.completed(before))
    restarted_at = time.time()
    harness.start(run.victim)  # on its old store
    harness.wait_balanced()  # its join: a rebalance over the three
    time.sleep(QUIET_S)
    after = harness.events()

    problems = (
        [f"jobs unfinished before the restart: {', '.join(unfinished)}"] if unfinished else []
    )
    problems += silence_problems(member, restarted_at, run.moved, before, after)
    assert_none(f"the restarted {member.name} (moved jobs {sorted(run.moved)})", problems, harness)


def ends(harness: ClusterHarness, job_id: str) -> list[str]:
    """The statuses of the job's distinct job.completed events, in seq order."""
    found = distinct(p.event for p in harness.events() if p.event.job_id == job_id)
    completions = sorted(
        (e for e in found.values() if e.type == "job.completed"), key=lambda e: e.seq
    )
    return [e.status for e in completions]


def files_below(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(90)
def test_remote_operations(make_cluster, tmp_path):
    """A process on no daemon's host (its store.path does not exist) reads a job's state
    from the changelog, cancels a running job and resumes it through the commands topic,
    and exports a job's files, as the owner's own store would have them."""
    harness = make_cluster()
    harness.start_all()
    finished, stopped = harness.submit(2)  # on two partitions, so two owners
    elsewhere = {
        **harness.members[0].variables,
        # no daemon's host: no store here; the commands must read the changelog or the
        # commands topic
        "CODEGEND_STORE__PATH": str(tmp_path / "elsewhere" / "codegend.db"),
    }
    wait_for(lambda: any(stopped in m.running_jobs() for m in harness.members), 30)
    [owner] = [m for m in harness.members if stopped in m.jobs()]

    cancelled = codegend(elsewhere, "cancel", stopped)
    assert cancelled.stdout.strip() == f"{stopped}: cancel requested", cancelled.stderr
    wait_for(lambda: ends(harness, stopped) == ["cancelled"], 30, poll_s=0.3)

    resumed = codegend(elsewhere, "resume", stopped)
    assert resumed.stdout.startswith(f"{stopped}: resumes at "), resumed.stdout
    wait_for(lambda: ends(harness, stopped) == ["cancelled", "completed"], 60, poll_s=0.5)
    assert not harness.wait_completed(30), harness.logs()

    # what the owner's store says, read from the changelog (every changelog record of a
    # job is confirmed before its job.completed is published)
    remote = json.loads(codegend(elsewhere, "status", stopped, "--json").stdout)
    local = json.loads(codegend(owner.variables, "status", stopped, "--json").stdout)
    assert remote == local
    assert remote["state"] == "COMPLETED"
    listed = json.loads(codegend(elsewhere, "status", "--json").stdout)
    assert {(row["job_id"], row["state"]) for row in listed} == {
        (finished, "COMPLETED"),
        (stopped, "COMPLETED"),
    }

    [exporter] = [m for m in harness.members if finished in m.jobs()]
    codegend(elsewhere, "export", finished, str(tmp_path / "remote"))
    codegend(exporter.variables, "export", finished, str(tmp_path / "local"))
    exported = files_below(tmp_path / "remote")
    assert exported and exported == files_below(tmp_path / "local")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.timeout(150)
def test_rolling_restart(make_cluster):
    # longer than a phase (about 1 s): a stopping daemon finishes its running phases, so a
    # rolling restart runs no phase twice (design section 7.1)
    harness = make_cluster(CODEGEND_JOBS__SHUTDOWN_GRACE_S="10")
    harness.start_all()
    harness.submit(9)
    harness.wait_all_running()
    for i in range(len(harness.members)):
        member = harness.members[i]
        assert harness.stop(i) == 0, f"{member.name} did not stop cleanly\n{member.log_tail()}"
        harness.start(i)  # waits for its ready file
        harness.wait_balanced()
    harness.wait_completed(FINISH_TIMEOUT_S)
    events = harness.check()
    assert_none("phases run twice", phase_started_problems(events, harness.requests), harness)


@pytest.mark.timeout(90)
def test_duplicate_after_move(make_cluster):
    harness = make_cluster()
    harness.start_all()
    [request_id] = harness.submit(1)
    missing = harness.wait_completed(FINISH_TIMEOUT_S)
    assert not missing, f"{request_id} did not complete on a healthy cluster\n{harness.logs()}"
    partition = harness.requests[request_id]
    [first] = [m for m in harness.members if request_id in m.jobs()]  # it accepted the job
    marks = {m.index: m.log_size() for m in harness.members}
    assert harness.stop(first.index) == 0, first.log_tail()
    owner = harness.members[harness.wait_owner(partition, marks, timeout_s=30)]
    harness.send(request_id)

    def accepted(events: list[Published]) -> int:
        found = distinct(p.event for p in events if p.event.job_id == request_id)
        return sum(1 for e in found.values() if e.type == "job.accepted")

    duplicates = 'codegend_requests_total{outcome="duplicate"}'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counted = owner.metric(duplicates)
        events = harness.events()
        if counted or accepted(events) > 1:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # a second job.accepted would follow a duplicate counted by mistake
    events = harness.events()
    problems = []
    if (n := accepted(events)) != 1:
        problems.append(f"{request_id}: {n} job.accepted event_ids (want 1)")
    if counted != 1:
        problems.append(
            f"{owner.name}, the partition's new owner, counted {counted:.0f} duplicates (want 1)"
        )
    assert_none(
        f"{request_id} sent again after partition {partition} moved from {first.name}",
        problems,
        harness,
    )


@pytest.mark.timeout(150)
def test_paused_zombie(make_cluster):
    """SIGSTOP a daemon mid-phase until its partitions have new owners, then SIGCONT: what it
    finishes after the pause never reaches the events topic as a second version of any
    step (one event_id per seq, one phase.completed per phase), and every job completes."""
    harness = make_cluster()
    harness.start_all()
    harness.submit(6)
    running = harness.wait_all_running(completed=3)
    victim = max(running, key=lambda i: (len(running[i]), -i))
    member = harness.members[victim]
    partitions = member.assigned() or set()
    marks = {m.index: m.log_size() for m in harness.members}
    paused_at = time.time()
    harness.pause(victim)
    try:
        for partition in sorted(partitions):
            owner = harness.wait_owner(partition, marks, timeout_s=30)
            assert owner != victim, f"partition {partition} stayed with the paused {member.name}"
        # The new owner resumed the moved jobs: a model call for one of them came after the
        # pause from a live daemon (the paused one makes none).
        moved = set(running[victim])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            set(m.calls(since=paused_at)) & moved for m in harness.members if m.index != victim
        ):
            time.sleep(0.2)
    finally:
        harness.resume(victim)
    harness.wait_completed(FINISH_TIMEOUT_S)
    harness.check(what=f"{member.name} paused past its session, then resumed")


RATE_LIMIT_PER_MIN = 30
RATE_WINDOW_S = 12.0


@pytest.mark.timeout(120)
def test_the_daemons_share_the_accounts_rate_limit(make_cluster):
    """Each daemon takes the share of llm.requests_per_min that its partitions are of the
    topic's (design section 6.1): the three together never send more than the account's
    limit allows, its burst included, although each alone could send it all."""
    # low enough that the limit, not the model's latency, paces the calls within seconds
    harness = make_cluster(CODEGEND_LLM__REQUESTS_PER_MIN=str(RATE_LIMIT_PER_MIN))
    harness.start_all()
    harness.wait_balanced()
    harness.submit(9)
    time.sleep(RATE_WINDOW_S + 2)
    times = sorted(r.received_at for r in harness.server.requests)
    assert times, f"no model call in {RATE_WINDOW_S:.0f} s\n{harness.logs()}"
    window = [t for t in times if t <= times[0] + RATE_WINDOW_S]
    # the buckets start full (the shares add up to one limit's burst), then refill at the
    # limit's pace; without the share each of the three would allow as much
    allowed = RATE_LIMIT_PER_MIN + RATE_LIMIT_PER_MIN * RATE_WINDOW_S / 60
    assert len(window) <= allowed, (
        f"{len(window)} model calls in {RATE_WINDOW_S:.0f} s from three daemons; the account's "
        f"limit of {RATE_LIMIT_PER_MIN}/min allows {allowed:.0f}\n{harness.logs()}"
    )
    calls = {m.name: sum(m.calls().values()) for m in harness.members}
    assert sum(1 for n in calls.values() if n) >= 2, f"the calls were not shared: {calls}"
