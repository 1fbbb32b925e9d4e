"""No phase lost to the model: scripted faults from the Messages API, the real SDK, the
real broker. Each ends with the phase completed (or failed for a clear reason) after the
expected number of calls."""

from __future__ import annotations

import json

import pytest

from daemon.store import Store
from tests.support.daemons import phase_event, run_job
from tests.support.messages_server import Reply, produced_paths
from tests.support.scripted_files import FILES


def full_answer() -> str:
    return json.dumps({"files": [{"path": p, "content": c} for p, c in FILES], "complete": True})


def cut_points() -> dict[str, int]:
    text = full_answer()
    first_path = text.index(FILES[0][0])
    second_content = text.index('"content"', text.index(FILES[1][0])) + 15
    escape = text.index("\\\\\\\\")  # inside the escaped backslash of the first file
    after_first = text.index(FILES[1][0]) - 12
    return {
        "within the first path": first_path + 5,
        "mid escape in the first file": escape + 1,
        "right after the first file": after_first,
        "mid string of the second file": second_content,
        "before complete": text.index('"complete"'),
    }


@pytest.mark.parametrize("where", list(cut_points()))
async def test_cut_answers_keep_complete_files_and_finish(where, make_settings, messages_server):
    cut = cut_points()[where]
    messages_server.phase_files["BE_MODELS"] = FILES
    messages_server.enqueue("BE_MODELS", Reply(text=full_answer()[:cut], stop_reason="max_tokens"))
    settings = make_settings()
    events = await run_job(settings, "cut")
    done = phase_event(events, "BE_MODELS")
    assert done.type == "phase.completed"
    assert {f.path: f.content for f in done.files} == dict(FILES)
    calls = messages_server.calls_for("BE_MODELS")
    assert len(calls) == 2 and done.usage.calls == 2
    kept = [p for p, _ in FILES if p in produced_paths(calls[1].body)]
    budgets = [c.body["max_tokens"] for c in calls]
    if kept:
        assert budgets == [4000, 4000]  # files were kept: same budget, only the rest asked for
    else:
        assert budgets == [4000, 8000]  # not one file fitted: the budget doubled


@pytest.mark.parametrize(
    "bad",
    [
        Reply(text='{"files": [{"path": "a.py", "content": "x",}], "complete": true}'),
        Reply(text='{"files": [{"path": "a.py"}], "complete": true}'),
        Reply(text='{"files": "nope", "complete": true}'),
        Reply(text="", stop_reason="refusal"),
    ],
    ids=["invalid-json-end-turn", "schema-missing-content", "schema-wrong-type", "refusal"],
)
async def test_broken_answers_are_asked_again(bad, make_settings, messages_server):
    messages_server.phase_files["BE_MODELS"] = FILES
    messages_server.enqueue("BE_MODELS", bad)
    settings = make_settings()
    events = await run_job(settings, "broken")
    done = phase_event(events, "BE_MODELS")
    assert done.type == "phase.completed" and len(done.files) == 3
    first, second = messages_server.calls_for("BE_MODELS")
    assert "previous answer was rejected" in json.dumps(second.body)
    store = Store(settings.store.path)
    try:
        recorded = store.calls("broken", "BE_MODELS")
    finally:
        store.close()
    assert [c.call for c in recorded] == [1, 2]


UNSAFE = [
    "/etc/passwd",
    "../escape.py",
    "a/../../b.py",
    "C:/win.py",
    "a\\\\b.py",
    ".git/config",
    "~/home.py",
    "x" * 300,
    "nul\\u0000.py",
]


async def test_unsafe_paths_are_rejected_and_re_asked(make_settings, messages_server, tmp_path):
    files = ",".join(f'{{"path": "{p}", "content": "x"}}' for p in UNSAFE)
    messages_server.phase_files["BE_MODELS"] = FILES
    messages_server.enqueue("BE_MODELS", Reply(text=f'{{"files": [{files}], "complete": true}}'))
    settings = make_settings()
    events = await run_job(settings, "unsafe")
    done = phase_event(events, "BE_MODELS")
    assert sorted(f.path for f in done.files) == sorted(p for p, _ in FILES)
    feedback = json.dumps(messages_server.calls_for("BE_MODELS")[1].body)
    assert feedback.count("unsafe path") == len(UNSAFE)
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert not any(
        "escape" in p or "passwd" in p or p.rsplit("/", 1)[-1] == "config" for p in written
    )


async def test_repairs_run_out_with_a_clear_reason(make_settings, messages_server):
    messages_server.enqueue("BE_MODELS", *[Reply(text="not json")] * 3)
    settings = make_settings(llm={"max_repairs": 2})
    events = await run_job(settings, "hopeless")
    failed = phase_event(events, "BE_MODELS")
    assert failed.type == "phase.failed" and "still invalid after 2 repairs" in failed.error
    assert events[-1].status == "partial" and events[-1].failed_phases == ["BE_MODELS"]
    assert len(messages_server.calls_for("BE_MODELS")) == 3


async def test_overload_bursts_and_rate_limits_pass(make_settings, messages_server):
    messages_server.enqueue("DB", *[Reply(status=529, headers={"retry-after-ms": "100"})] * 3)
    messages_server.enqueue("BE_CORE", Reply(status=429, headers={"retry-after-ms": "100"}))
    settings = make_settings()
    events = await run_job(settings, "bursty")
    assert events[-1].status == "completed"
    assert (
        len(messages_server.calls_for("DB")) == 4 and len(messages_server.calls_for("BE_CORE")) == 2
    )


async def test_a_long_retry_after_puts_the_job_aside(make_settings, messages_server):
    messages_server.enqueue("DB", Reply(status=429, headers={"retry-after": "2"}))
    settings = make_settings(llm={"max_retry_after_s": 0.5})
    events = await run_job(settings, "aside")
    assert events[-1].status == "completed"
    db = [e for e in events if e.type == "phase.started" and e.phase == "DB"]
    assert len(db) == 2  # started, put aside, started again after the wait
    assert (db[1].ts - db[0].ts).total_seconds() >= 2


async def test_retries_run_out_with_a_clear_reason(make_settings, messages_server):
    messages_server.enqueue("FE_CORE", *[Reply(status=500, headers={"retry-after-ms": "10"})] * 3)
    settings = make_settings(llm={"max_retries": 2})
    events = await run_job(settings, "down")
    failed = phase_event(events, "FE_CORE")
    assert failed.type == "phase.failed" and "model unavailable after 2 retries" in failed.error


async def test_the_shared_prefix_is_cached(make_settings, messages_server):
    settings = make_settings()
    events = await run_job(settings, "cache")
    for call in messages_server.requests:
        body = call.body
        marks = [b for b in body["system"] if "cache_control" in b]
        marks += [b for b in body["messages"][0]["content"] if "cache_control" in b]
        assert 1 <= len(marks) <= 4
    completed = [e for e in events if e.type == "phase.completed"]
    assert completed[0].usage.cache_creation_input_tokens > 0  # ARCH writes the prefix
    # from DB on, the prefix holds the plan: written once by DB, read by every later phase
    # (VERIFY, last, makes no call: the project has nothing to repair)
    assert completed[-1].phase == "VERIFY" and completed[-1].usage.calls == 0
    assert all(e.usage.cache_read_input_tokens > 0 for e in completed[2:-1])
    total = events[-1].usage
    assert total.cache_read_input_tokens == sum(e.usage.cache_read_input_tokens for e in completed)
    assert total.cost_usd > 0


async def test_a_job_over_its_token_budget_fails(make_settings, messages_server):
    settings = make_settings(llm={"max_tokens_per_job": 3000})
    events = await run_job(settings, "greedy")
    assert events[-1].status == "failed"
    failed = [e for e in events if e.type == "phase.failed"]
    assert "llm.max_tokens_per_job" in failed[-1].error


async def test_cheap_phases_can_use_a_smaller_model(make_settings, messages_server):
    settings = make_settings(phases={"CONFIG": {"model": "claude-haiku-5-5"}})
    await run_job(settings, "cheap")
    assert messages_server.calls_for("CONFIG")[0].body["model"] == "claude-haiku-5-5"
    assert messages_server.calls_for("DB")[0].body["model"] == settings.llm.model


def files_answer(*files: tuple[str, str]) -> str:
    return json.dumps({"files": [{"path": p, "content": c} for p, c in files], "complete": True})


async def test_a_file_failing_the_checks_is_sent_back_and_fixed(make_settings, messages_server):
    good = ("backend/app/config.py", "SETTINGS = {'debug': False}\n")
    broken = ("backend/app/config.py", "def settings(:\n    return {}\n")
    other = ("backend/requirements.txt", "fastapi\n")
    messages_server.phase_files["BE_CORE"] = [good, other]  # what the file plan gives BE_CORE
    messages_server.enqueue(
        "BE_CORE", Reply(text=files_answer(broken, other)), Reply(text=files_answer(good))
    )
    settings = make_settings()
    events = await run_job(settings, "fixme")
    core = phase_event(events, "BE_CORE")
    assert core.type == "phase.completed" and core.warnings == []
    assert {f.path: f.content for f in core.files} == dict([good, other])
    fix_request = json.dumps(messages_server.calls_for("BE_CORE")[1].body)
    assert "backend/app/config.py: line 1" in fix_request and "fail the code checks" in fix_request
    assert "- backend/requirements.txt" in fix_request.replace("\\n", "\n")  # kept, not redone


async def test_what_still_fails_the_checks_is_reported(make_settings, messages_server):
    broken = ("frontend/package.json", '{"name": "web"}')
    messages_server.enqueue(
        "FE_SETUP", Reply(text=files_answer(broken)), Reply(text=files_answer(broken))
    )
    settings = make_settings()
    events = await run_job(settings, "stubborn")
    setup = phase_event(events, "FE_SETUP")
    assert setup.type == "phase.completed"
    assert setup.warnings and "scripts" in setup.warnings[0]
    assert len(messages_server.calls_for("FE_SETUP")) == 2  # sent back once, not more


async def test_prompt_caching_can_be_turned_off(make_settings, messages_server):
    settings = make_settings(llm={"prompt_caching": False})
    events = await run_job(settings, "nocache")
    assert "cache_control" not in json.dumps([r.body for r in messages_server.requests])
    assert events[-1].usage.cache_read_input_tokens == 0
