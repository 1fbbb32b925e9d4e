"""Hostile model answers, served by the local Messages server through the real SDK to a real
daemon on the real broker: poisoned files (nesting that breaks parsers, text that made the
checks quadratic, lone surrogates), broken streams (garbled SSE lines, an oversized answer,
pings forever). Each ends as a phase problem (a repair, a fix request or a retry, with the
precise reason), never as a crashed job: every job reaches job.completed, and /healthz
answers within a second throughout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from daemon.contract import Event, JobCompletedEvent, PhaseCompletedEvent
from daemon.store import Store
from tests.hostile.answers_support import HealthPoller, PerJobScript
from tests.support.daemons import collect, running
from tests.support.messages_server import Reply, files_answer
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce

HEALTH_LIMIT_S = 1.0
MIB = 1024 * 1024
DEEP = 50_000  # far past any recursion limit


@dataclass(frozen=True)
class Case:
    """One hostile answer for one phase of one job, and how the phase must show it: the
    reason in the next call's prompt (a repair or a fix request), in the store's record
    of the failed call (a retry), or in the warnings of the job's events."""

    project: str
    phase: str
    reply: Reply
    needle: str
    seen_in: str  # "prompt", "call" or "warnings" (of the job's events)


def _toml() -> str:
    return '[project]\nname = "api"\ndependencies = ' + "[" * 500 + "]" * 500 + "\n"


CHECKED = "hostile-checks"  # answers whose files poison the code checks and the manifest
PARSED = "hostile-parsed"  # answers the answer parsers must survive
STREAMED = "hostile-streamed"  # streams the SSE reader must survive

CASES = [
    Case(
        CHECKED,
        "BE_CORE",
        Reply(text=files_answer([("backend/pyproject.toml", _toml())])),
        "backend/pyproject.toml: invalid TOML: nested too deeply",
        "prompt",
    ),
    Case(
        CHECKED,
        "BE_MODELS",
        Reply(text=files_answer([("backend/app/models/minus.py", "x = " + "-" * 3000 + "1\n")])),
        "backend/app/models/minus.py: line 1:",
        "prompt",
    ),
    Case(
        CHECKED,
        "FE_SETUP",
        Reply(
            text=files_answer(
                [
                    (
                        "frontend/package.json",
                        '{"name": "web", "scripts": {"dev": "vite"}, "dependencies": 5}',
                    )
                ]
            )
        ),
        'frontend/package.json: package.json "dependencies" must be an object',
        "prompt",
    ),
    Case(  # 60 KB of unterminated block comments: 4.1 s of regex before
        CHECKED,
        "FE_CORE",
        Reply(text=files_answer([("frontend/tsconfig.json", "/* " * 20_000)])),
        "frontend/tsconfig.json: line 1: invalid JSON",
        "prompt",
    ),
    Case(  # 72 KB of imports without a from: 6.7 s of regex before; the last line is found
        CHECKED,
        "FE_PAGES",
        Reply(
            text=files_answer(
                [("frontend/src/pages/many.ts", "import x\n" * 8000 + "import './missing'\n")]
            )
        ),
        "line 8001: import './missing' does not resolve",
        "warnings",  # a later phase writes to that folder: the job's end reports it
    ),
    Case(
        PARSED,
        "BE_CORE",
        Reply(
            text='{"files": [{"path": "backend/deep.txt", "content": "x", "extra": '
            + "[" * DEEP
            + "]" * DEEP
            + '}], "complete": true}'
        ),
        "the answer is not valid JSON: nested too deeply",
        "prompt",
    ),
    Case(  # cut inside a deep nesting: the file before it is kept
        PARSED,
        "BE_ROUTES",
        Reply(
            text='{"files": [{"path": "backend/app/kept.py", "content": "x = 1\\n"}, '
            '{"path": "backend/deep.txt", "content": ' + "[" * DEEP,
            stop_reason="max_tokens",
        ),
        "- backend/app/kept.py",
        "prompt",
    ),
    Case(  # the answer spells a lone surrogate in a path
        PARSED,
        "BE_UTILS",
        Reply(
            text='{"files": [{"path": "backend/bad\\ud800.py", "content": "x"}], "complete": true}'
        ),
        "files.0.path: Value error, holds a lone surrogate U+D800 at character 11",
        "prompt",
    ),
    Case(  # the stream's JSON spells one: the answer text itself holds the surrogate
        PARSED,
        "FE_COMPONENTS",
        Reply(
            text='{"files": [{"path": "frontend/src/bad.ts", "content": "a\ud800b"}], "complete": true}'
        ),
        "files.0.content: Value error, holds a lone surrogate U+D800 at character 1",
        "prompt",
    ),
    Case(
        STREAMED,
        "DB",
        Reply(raw_sse=[b"data: x\n\n"]),
        "garbled stream: an event that is not JSON",
        "call",
    ),
    Case(
        STREAMED,
        "BE_CORE",
        Reply(raw_sse=[b"data: [1]\n\n"]),
        "garbled stream: an event that is not a JSON object",
        "call",
    ),
    Case(
        STREAMED,
        "BE_MODELS",
        Reply(raw_sse=[b'data: {"type": "content_block_delta", "index": 0, "delta": 5}\n\n']),
        "garbled stream: a content_block_delta without a delta object",
        "call",
    ),
    Case(
        STREAMED,
        "BE_ROUTES",
        Reply(
            raw_sse=[
                b'data: {"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}\n\n'
            ]
        ),
        "garbled stream: a text_delta whose text is not a string",
        "call",
    ),
    Case(STREAMED, "BE_UTILS", Reply(raw_sse=[b"data: \xff\xfe\n\n"]), "garbled stream", "call"),
    Case(
        STREAMED,
        "FE_SETUP",
        Reply(raw_sse=[b"data: " + b"[" * DEEP + b"\n\n"]),
        "garbled stream: an event that is not JSON",
        "call",
    ),
    Case(  # 17 MiB of one file's content, 1 MiB per event, past the default llm.max_answer_bytes
        STREAMED,
        "FE_CORE",
        Reply(text=files_answer([("frontend/huge.txt", "x" * (17 * MIB))]), chunk_chars=MIB),
        "the answer passed llm.max_answer_bytes = 16777216 bytes",
        "call",
    ),
]


def _evidence(case: Case, script: PerJobScript, store: Store, events: list[Event]) -> str:
    if case.seen_in == "warnings":
        completed = [e for e in events if isinstance(e, PhaseCompletedEvent | JobCompletedEvent)]
        return "\n".join(w for event in completed for w in event.warnings or [])
    if case.seen_in == "prompt":
        calls = script.calls(case.project, case.phase)
        return "\n".join(str(call.body["messages"]) for call in calls[1:])
    return "\n".join(str(call.error) for call in store.calls(case.project, case.phase))


def _phase_end(events: list[Event], phase: str) -> Event:
    return next(
        e for e in events if e.type in ("phase.completed", "phase.failed") and e.phase == phase
    )


def _assert_clean(events: list[Event]) -> None:
    """Nothing that cannot be encoded reached the events (a surrogate would have crashed
    the store or the relay on its way)."""
    for event in events:
        for file in event.files if isinstance(event, PhaseCompletedEvent) else []:
            file.path.encode()
            file.content.encode()


async def _run_jobs(settings, script: PerJobScript, projects: list[str]) -> dict[str, list[Event]]:
    async with running(settings) as daemon:
        assert daemon.metrics_port
        with HealthPoller(daemon.metrics_port) as health:
            await produce(
                settings, *(request_bytes(request_id=p, project_name=p) for p in projects)
            )
            found = await asyncio.gather(*(collect(settings, p) for p in projects))
        assert not health.failures, health.failures
        assert len(health.latencies_s) >= 10  # it polled throughout, not once at the end
        assert max(health.latencies_s) < HEALTH_LIMIT_S, max(health.latencies_s)
    return dict(zip(projects, found, strict=True))


async def test_poisoned_answers_end_as_phase_problems(make_settings, messages_server):
    script = PerJobScript(messages_server)
    messages_server.responder = script
    for case in CASES:
        script.add(case.project, case.phase, case.reply)
    settings = make_settings()
    projects = sorted({case.project for case in CASES})
    events = await _run_jobs(settings, script, projects)
    store = Store(settings.store.path)
    try:
        for case in CASES:
            end = _phase_end(events[case.project], case.phase)
            assert end.type == "phase.completed", (case.phase, end.error)
            evidence = _evidence(case, script, store, events[case.project])
            assert case.needle in evidence, (case.project, case.phase)
    finally:
        store.close()
    for project, found in events.items():
        assert found[-1].type == "job.completed" and found[-1].status == "completed", project
        _assert_clean(found)
    kept = _phase_end(events[PARSED], "BE_ROUTES")
    assert "backend/app/kept.py" in {f.path for f in kept.files}
    oversized = _phase_end(events[STREAMED], "FE_CORE")
    assert "frontend/huge.txt" not in {f.path for f in oversized.files}


@pytest.mark.timeout(60)
async def test_a_stream_of_pings_ends_at_the_call_deadline(make_settings, messages_server):
    project = "hostile-endless"
    script = PerJobScript(messages_server)
    messages_server.responder = script
    head = '{"files": [{"path": "kept.md", "content": "closed before the pings"}, '
    script.add(project, "CONFIG", Reply(text=head, endless=True))
    # llm.call_deadline_s is 600 s by default (16,000 tokens at 27 tokens/s); a test cannot
    # wait that long, so the deadline is brought down to what the fake model needs.
    settings = make_settings(llm={"call_deadline_s": 3.0})
    events = (await _run_jobs(settings, script, [project]))[project]
    done = _phase_end(events, "CONFIG")
    assert done.type == "phase.completed"
    assert "kept.md" in {f.path for f in done.files}
    first, second = script.calls(project, "CONFIG")[:2]
    assert "- kept.md" in str(second.body["messages"])  # the next call asked only for the rest
    store = Store(settings.store.path)
    try:
        failed = store.calls(project, "CONFIG")[0]
    finally:
        store.close()
    assert failed.error == "no whole answer within llm.call_deadline_s = 3 s"
    assert 2.9 < second.received_at - first.received_at < 10
    assert events[-1].status == "completed"
