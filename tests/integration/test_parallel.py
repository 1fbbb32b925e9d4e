"""Parallel execution: phases start as soon as what they need is done."""

from __future__ import annotations

import json

from daemon.states import PHASE_BY_NAME, PHASE_NAMES
from daemon.store import Store
from tests.support.daemons import collect, running
from tests.support.messages_server import Reply
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce


def starts_and_ends(events):
    order = {}
    for index, event in enumerate(events):
        if event.type == "phase.started":
            order.setdefault(event.phase, [index, None])
        elif event.type in ("phase.completed", "phase.failed"):
            order[event.phase][1] = index
    return order


async def test_branches_run_side_by_side_and_output_matches_sequential(
    make_settings, messages_server
):
    messages_server.latency_s = 0.2
    sequential = make_settings(jobs={"execution": "sequential"})
    async with running(sequential):
        await produce(sequential, request_bytes(request_id="seq"))
        seq_events = await collect(sequential, "seq")
    parallel = make_settings(jobs={"execution": "parallel"})
    async with running(parallel):
        await produce(parallel, request_bytes(request_id="par"))
        par_events = await collect(parallel, "par")
    assert par_events[-1].status == "completed"
    assert [e.seq for e in par_events] == list(range(1, len(par_events) + 1))

    order = starts_and_ends(par_events)
    for name in PHASE_NAMES:  # nothing starts before what it needs is done
        for need in PHASE_BY_NAME[name].needs:
            assert order[need][1] < order[name][0], (need, name)
    # after ARCH the backend and frontend branches overlap
    assert order["FE_SETUP"][0] < order["BE_CORE"][1] and order["BE_CORE"][0] < order["FE_SETUP"][1]
    assert order["FE_PAGES"][0] < order["FE_COMPONENTS"][1]

    def files(events):
        return {f.path: f.sha256 for e in events if e.type == "phase.completed" for f in e.files}

    assert files(par_events) == files(seq_events)


async def test_a_failed_branch_phase_ends_partial_and_the_rest_runs(make_settings, messages_server):
    messages_server.enqueue("BE_MODELS", Reply(status=400, error_type="invalid_request_error"))
    settings = make_settings(jobs={"execution": "parallel"})
    async with running(settings) as daemon:
        await produce(settings, request_bytes(request_id="pp"))
        events = await collect(settings, "pp")
        assert events[-1].status == "partial" and events[-1].failed_phases == ["BE_MODELS"]
        done = {e.phase for e in events if e.type == "phase.completed"}
        assert done == set(PHASE_NAMES) - {"BE_MODELS"}  # BE_ROUTES ran although its need failed
        assert daemon.store.reopen("pp", reason="test") == "BE_MODELS"
        daemon.scheduler.wake()
        again = await collect(settings, "pp", completions=2)
    assert again[-1].status == "completed"
    rerun = [e.phase for e in again[len(events) :] if e.type == "phase.completed"]
    assert rerun == ["BE_MODELS", "VERIFY"]  # VERIFY checks the project again


async def test_running_phases_are_visible_in_the_store(make_settings, messages_server):
    messages_server.latency_s = 0.3
    settings = make_settings(jobs={"execution": "parallel"})
    seen: list[set[str]] = []

    def peek(body):
        store = Store(settings.store.path)
        try:
            statuses = store.phase_statuses("vis")
        finally:
            store.close()
        seen.append({name for name, status in statuses.items() if status == "running"})
        return messages_server.default_responder(body)

    messages_server.responder = peek
    async with running(settings):
        await produce(settings, request_bytes(request_id="vis"))
        events = await collect(settings, "vis")
    assert events[-1].status == "completed"
    assert any({"BE_CORE", "FE_SETUP"} <= running for running in seen)
    assert json.dumps(sorted(max(seen, key=len)))
