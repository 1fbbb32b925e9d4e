"""Cluster mode in-process, against the real test broker: a daemon restores its partitions
from the changelog before it takes requests, replicates every committed step, and the
jobs of a daemon that leaves the group continue on another one (docs/cluster-design.md)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.daemons import collect, running
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce


@pytest.fixture
def cluster_settings(make_settings):
    """Cluster mode, as against any real broker by default (make_settings gives the test
    its own changelog and commands topics)."""
    return make_settings


async def test_one_daemon_in_cluster_mode_runs_a_job_with_gapless_events(
    cluster_settings, messages_server
):
    settings = cluster_settings()
    async with running(settings) as daemon:
        await produce(settings, request_bytes(request_id="c-1"))
        events = await collect(settings, "c-1")
        assert daemon.ownership is not None and daemon.ownership.restores == 2
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "job.completed" and events[-1].status == "completed"


async def test_jobs_of_a_daemon_that_leaves_continue_on_the_other(
    cluster_settings, messages_server, tmp_path
):
    messages_server.latency_s = 0.3  # phases last long enough for the first daemon to leave mid-job
    first = cluster_settings(
        # the first daemon stops without waiting for its phases: they move mid-run
        jobs={"shutdown_grace_s": 0},
    )
    second = cluster_settings(
        store={"path": tmp_path / "second.db"}, output={"dir": tmp_path / "out2"}
    )
    ids = [f"move-{n}" for n in range(4)]
    async with running(first) as a:
        for job_id in ids:  # keyed by request_id, as the contract asks producers to
            await produce(first, request_bytes(request_id=job_id), key=job_id.encode())
        async with asyncio.timeout(30):
            while len(a.scheduler.running) < 2:
                await asyncio.sleep(0.05)
        async with running(second) as b:
            a.request_stop()
            done = await asyncio.gather(*(collect(second, job_id) for job_id in ids))
            assert b.ownership is not None
    moved = 0
    for events in done:
        assert events[-1].type == "job.completed" and events[-1].status == "completed"
        by_seq = {}
        for event in events:
            assert by_seq.setdefault(event.seq, event.event_id) == event.event_id
        assert sorted(by_seq) == list(range(1, len(by_seq) + 1))
        completions = {}
        for event in events:
            if event.type == "phase.completed":
                completions.setdefault(event.phase, set()).add(event.event_id)
        assert all(len(ids) == 1 for ids in completions.values()), completions
        moved += any(e.type == "job.resumed" and e.reason == "failover" for e in events)
    assert moved >= 2  # the two jobs running on the first daemon at least
