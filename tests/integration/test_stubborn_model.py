"""A model that now and then says "not complete" without a new file, and an API that
refuses the account: through the real SDK and the real broker, at the default settings."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx2

from daemon.store import Store
from tests.support.daemons import collect, running
from tests.support.messages_server import Reply, stalling_responder
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce

JOBS = 16
STALL_RATE = 0.3


def request_key(recorded) -> str:
    """What makes two requests the same for the model (metadata aside)."""
    body = recorded.body
    return json.dumps([body["model"], body["max_tokens"], body["messages"]], sort_keys=True)


async def test_jobs_complete_when_the_model_stalls_and_no_request_is_sent_twice(
    make_settings, messages_server
):
    messages_server.responder = stalling_responder(STALL_RATE, seed=7)
    settings = make_settings()
    ids = [f"stall-{n:02d}" for n in range(JOBS)]
    async with running(settings):
        await produce(
            settings,
            *(request_bytes(request_id=i, project_name=f"p{n}") for n, i in enumerate(ids)),
        )
        results = await asyncio.gather(*(collect(settings, i, timeout_s=120) for i in ids))
    for events in results:
        assert events[-1].type == "job.completed" and events[-1].status == "completed", events[-1]
    repeats = Counter(request_key(r) for r in messages_server.requests)
    assert [n for n in repeats.values() if n > 1] == []
    stalled = [
        w
        for events in results
        for e in events
        if e.type == "phase.completed"
        for w in e.warnings
        if "'not complete'" in w
    ]
    asked_again = [r for r in messages_server.requests if "added no new file" in json.dumps(r.body)]
    assert asked_again, "the stalling model never stalled: the test proves nothing"
    print(
        f"\n{len(messages_server.requests)} calls, {len(asked_again)} after a stall, "
        f"{len(stalled)} phases ended on repeated stalls"
    )


async def test_a_refused_account_puts_jobs_aside_until_a_restart(make_settings, messages_server):
    messages_server.enqueue("ARCH", Reply(status=401))
    settings = make_settings()
    async with running(settings) as daemon:
        await produce(settings, request_bytes(request_id="keyless"))
        url = f"http://127.0.0.1:{daemon.metrics_port}/readyz"
        async with httpx2.AsyncClient() as http:
            for _ in range(100):
                ready = await http.get(url)
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.1)
        assert ready.status_code == 503 and "refuses the account" in ready.text
        assert "HTTP 401" in ready.text and "sk-ant" not in ready.text
        await asyncio.sleep(1)  # the job stays put aside: no second call
        assert len(messages_server.calls_for("ARCH")) == 1
        store = Store(settings.store.path)
        try:
            (held,) = store.db.conn.execute("SELECT held FROM jobs").fetchone()
            assert "HTTP 401" in held
            assert store.job("keyless").state.name == "ARCH"
        finally:
            store.close()
    async with running(settings):  # a restart (with a good key): the job continues
        events = await collect(settings, "keyless")
    assert events[-1].type == "job.completed" and events[-1].status == "completed"
    assert not [e for e in events if e.type == "phase.failed"]
