"""Streamed answers: files are committed as they close, a broken stream costs one file."""

from __future__ import annotations

import json

from daemon.llm import AnthropicProvider, RecordingProvider
from daemon.store import Store
from tests.support.daemons import collect, replay_settings, running
from tests.support.messages_server import Reply, produced_paths
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce

PAGES = [
    (f"frontend/src/pages/P{i}.tsx", f"export default function P{i}() {{}}\n" * 8) for i in range(5)
]


def answer_text(files) -> str:
    return json.dumps({"files": [{"path": p, "content": c} for p, c in files], "complete": True})


def cut_offset(files, index: int) -> int:
    """A character offset inside the content of file ``index`` of the full answer."""
    text = answer_text(files)
    return text.index(files[index][0]) + len(files[index][0]) + 30


async def test_a_dropped_stream_keeps_the_closed_files(make_settings, messages_server):
    messages_server.phase_files["FE_PAGES"] = PAGES
    messages_server.enqueue("FE_PAGES", Reply(drop_after_chars=cut_offset(PAGES, 3)))
    settings = make_settings()
    async with running(settings):
        await produce(settings, request_bytes(request_id="drop"))
        events = await collect(settings, "drop")
    assert events[-1].status == "completed"
    pages = next(e for e in events if e.type == "phase.completed" and e.phase == "FE_PAGES")
    assert {f.path: f.content for f in pages.files} == dict(PAGES)
    first, second = messages_server.calls_for("FE_PAGES")
    produced = produced_paths(second.body)
    for path, _ in PAGES[:3]:  # committed before the drop: named, not asked for again
        assert path in produced
    for path, _ in PAGES[3:]:
        assert path not in produced
    assert pages.usage.calls == 1  # the broken stream reported no usage; the retry did


async def test_an_sse_error_event_is_retried(make_settings, messages_server):
    messages_server.enqueue("DB", Reply(sse_error="overloaded_error"))
    settings = make_settings()
    async with running(settings):
        await produce(settings, request_bytes(request_id="sse"))
        events = await collect(settings, "sse")
    assert events[-1].status == "completed"
    assert len(messages_server.calls_for("DB")) == 2


async def test_a_hung_call_times_out_and_is_retried(make_settings, messages_server):
    messages_server.enqueue("CONFIG", Reply(hang=True))
    settings = make_settings(llm={"timeout_s": 1.0, "max_retries": 2})
    async with running(settings):
        await produce(settings, request_bytes(request_id="hang"))
        events = await collect(settings, "hang")
    assert events[-1].status == "completed"
    assert len(messages_server.calls_for("CONFIG")) == 2


async def test_files_are_committed_before_the_phase_ends(make_settings, messages_server):
    messages_server.phase_files["FE_PAGES"] = PAGES
    seen_in_store: list[int] = []
    settings = make_settings()

    def peek(body):
        store = Store(settings.store.path)
        try:
            seen_in_store.append(len(store.files("peek", "FE_PAGES")))
        finally:
            store.close()
        return messages_server.default_responder(body)

    messages_server.enqueue("FE_PAGES", Reply(drop_after_chars=cut_offset(PAGES, 2)))
    messages_server.responder = lambda body: (
        peek(body)
        if "PHASE: FE_PAGES" in json.dumps(body)
        else messages_server.default_responder(body)
    )
    async with running(settings):
        await produce(settings, request_bytes(request_id="peek"))
        events = await collect(settings, "peek")
    assert events[-1].status == "completed"
    # the first call found nothing; when the retry came, the two closed files were in SQLite
    assert seen_in_store == [0, 2]


async def test_a_recorded_broken_stream_replays_the_same(make_settings, messages_server, tmp_path):
    messages_server.phase_files["FE_PAGES"] = PAGES
    messages_server.enqueue("FE_PAGES", Reply(drop_after_chars=cut_offset(PAGES, 1)))
    cassette = tmp_path / "cassette"
    live = make_settings()
    async with running(live, llm=RecordingProvider(AnthropicProvider(timeout_s=10), cassette)):
        await produce(live, request_bytes(request_id="rb"))
        recorded = await collect(live, "rb")
    assert "error" in json.loads((cassette / "rb" / "FE_PAGES.01.json").read_text())["response"]
    calls = len(messages_server.requests)
    replay = replay_settings(make_settings, live, cassette, tmp_path)
    async with running(replay):
        await produce(replay, request_bytes(request_id="rb"))
        replayed = await collect(replay, "rb")
    assert len(messages_server.requests) == calls

    def files(events):
        return {f.path: f.sha256 for e in events if e.type == "phase.completed" for f in e.files}

    assert files(replayed) == files(recorded)
