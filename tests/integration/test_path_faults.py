"""Paths a model should not have chosen, through the real SDK against the local Messages
server and the real broker: each is a repair error fed back to the model, the phase
completes with the rest, and nothing of it reaches the store or output.dir."""

from __future__ import annotations

import json

from daemon.store import Store
from tests.support.daemons import phase_event, run_job
from tests.support.messages_server import Reply, default_phase_files
from tests.support.scripted_files import FILES

DB_FIRST, DB_SECOND = (path for path, _ in default_phase_files("DB")[:2])
BAD = {
    DB_FIRST.upper(): "differs only in letter case",  # a DB file, in other letter case
    f"{DB_SECOND}/inner.py": "is a file",  # a DB file taken for a folder
    "backend/app/nul.py": "device name on Windows",
    "backend/app/con.d/x.py": "device name on Windows",
    "backend/app/\u202eyp.exe": "U+202E",
    "backend/app/a\u200b.py": "U+200B",
    "backend/app/trailing.": "ends with a dot",
    "backend/app/" + "\u00e9" * 128 + ".py": "longer than 100 characters",
}


async def test_clashing_and_unportable_paths_are_repaired(make_settings, messages_server):
    good = [{"path": p, "content": c} for p, c in FILES]
    bad = [{"path": p, "content": "x = 1\n"} for p in BAD]
    messages_server.phase_files["BE_MODELS"] = FILES
    messages_server.enqueue(
        "BE_MODELS", Reply(text=json.dumps({"files": good + bad, "complete": True}))
    )
    settings = make_settings()
    events = await run_job(settings, "clash")
    assert events[-1].type == "job.completed" and events[-1].status == "completed"
    done = phase_event(events, "BE_MODELS")
    assert sorted(f.path for f in done.files) == sorted(p for p, _ in FILES)
    first, second = messages_server.calls_for("BE_MODELS")
    feedback = " ".join(block["text"] for block in second.body["messages"][-1]["content"])
    for path, reason in BAD.items():  # each named, invisible characters escaped
        assert f"path {path!r}" in feedback and reason in feedback, (path, reason)
    store = Store(settings.store.path)
    try:
        stored = set(store.file_contents("clash"))
    finally:
        store.close()
    assert stored.isdisjoint(BAD) and {DB_FIRST, DB_SECOND} <= stored
    written = {
        p.relative_to(settings.output.dir / "clash").as_posix()
        for p in (settings.output.dir / "clash").rglob("*")
        if p.is_file()
    }
    assert written == stored
