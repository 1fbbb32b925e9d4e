"""A run recorded against the Messages API replays exactly, with no model at all."""

from __future__ import annotations

import json

from daemon.llm import AnthropicProvider, RecordingProvider
from tests.support.daemons import collect, replay_settings, running
from tests.support.messages_server import Reply
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce


async def test_recorded_run_replays_the_same_files(make_settings, messages_server, tmp_path):
    cassette = tmp_path / "cassette"
    messages_server.phase_files["DB"] = [
        (f"database/t{i}.sql", "SELECT 1;\n" * 80) for i in range(5)
    ]
    messages_server.enqueue("BE_CORE", Reply(text="not json"))  # a repair, recorded too
    live = make_settings(phases={"DB": {"max_tokens": 300}})
    recorder = RecordingProvider(AnthropicProvider(timeout_s=10), cassette)
    async with running(live, llm=recorder):
        await produce(live, request_bytes(request_id="rec"))
        recorded = await collect(live, "rec")
    entries = sorted(p.name for p in (cassette / "rec").iterdir())
    assert "DB.02.json" in entries and "BE_CORE.02.json" in entries
    assert (
        json.loads((cassette / "rec" / "DB.01.json").read_text())["response"]["stop_reason"]
        == "max_tokens"
    )
    calls = len(messages_server.requests)

    replay = replay_settings(
        make_settings, live, cassette, tmp_path, phases={"DB": {"max_tokens": 300}}
    )
    async with running(replay):
        await produce(replay, request_bytes(request_id="rec"))
        replayed = await collect(replay, "rec")
    assert len(messages_server.requests) == calls  # the model was not asked again

    def files(events):
        return {f.path: f.sha256 for e in events if e.type == "phase.completed" for f in e.files}

    assert files(replayed) == files(recorded)
    assert len(files(recorded)) == 9 * 3 + 5  # 3 files a phase; DB has 5, over several cut answers
    assert replayed[-1].usage == recorded[-1].usage
