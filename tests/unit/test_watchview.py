"""The watch view: a state folded from a scripted event stream, drawn on a recorded console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from daemon.contract import Event
from daemon.states import PHASE_NAMES
from daemon.watchview import WatchState, follow, spinner_frame
from tests.support.watch_events import T0, Script, screen


def mid_run(script: Script) -> list[Event]:
    return [
        script.accepted(),
        script.started("ARCH", 0.1),
        script.completed("ARCH", 6.2, files=0, tokens=1630, duration_s=6.1),
        script.started("DB", 6.3),
        script.completed("DB", 11.0, files=4, tokens=1811, duration_s=4.7),
        script.started("BE_CORE", 11.1),
        script.failed("BE_CORE", 15.0, "400 invalid_request_error"),
        script.started("BE_MODELS", 15.1),
        script.completed("BE_MODELS", 24.0, files=7, tokens=3702, warnings=["F401"]),
        script.started("BE_ROUTES", 24.1, attempt=2),
    ]


def row(text: str, phase: str) -> str:
    return next(line for line in text.splitlines() if f" {phase} " in line)


def cells(text: str, phase: str) -> list[str]:
    """A phase's row, split on spaces, without the panel's borders."""
    return [cell for cell in row(text, phase).split() if cell != "│"]


def test_a_job_mid_run_shows_each_phase_its_state_files_tokens_and_time():
    state = WatchState("shop-1")
    for event in mid_run(Script()):
        assert state.apply(event)
    text = screen(state, 31.5)
    assert "shop-1 · shop · running" in text
    assert "4/12 phases · 0:31 · 11 files · 7,143 output tokens" in text
    assert cells(text, "ARCH") == ["1", "ARCH", "✓", "done", "0", "1,630", "6.1", "s"]
    assert cells(text, "DB") == ["2", "DB", "✓", "done", "4", "1,811", "4.7", "s"]
    assert "✗ failed" in row(text, "BE_CORE") and "400 invalid_request_error" in text
    assert "1 warning" in row(text, "BE_MODELS")
    routes = row(text, "BE_ROUTES")
    assert "running" in routes and "7.4 s" in routes and "attempt 2" in routes
    for waiting in PHASE_NAMES[5:]:
        assert "· waiting" in row(text, waiting)
    assert not state.done and state.exit_code() == 0


def test_the_screen_is_a_function_of_the_events_and_the_clock():
    first, second = WatchState("shop-1"), WatchState("shop-1")
    events = mid_run(Script())
    for event in events:
        first.apply(event)
        second.apply(event)
    assert screen(first, 31.5) == screen(second, 31.5)
    assert screen(first, 31.5) != screen(first, 40.0)  # time and spinner move on


def test_a_repeated_event_changes_nothing():
    events = mid_run(Script())
    once, twice = WatchState("shop-1"), WatchState("shop-1")
    for event in events:
        once.apply(event)
    for event in events:
        twice.apply(event)
        assert not twice.apply(event)  # the same event again, right away
    for event in events:
        assert not twice.apply(event)  # the whole stream again, as after a relay crash
    assert screen(once, 31.5) == screen(twice, 31.5)


def test_other_jobs_are_ignored_when_one_is_watched():
    state = WatchState("shop-1")
    assert not state.apply(Script("other").accepted())
    assert state.jobs == {}
    assert "waiting for events of shop-1" in screen(state, 0)


def test_the_planned_phases_are_the_ones_shown():
    script = Script()
    state = WatchState("shop-1")
    state.apply(script.accepted(phases=["ARCH", "DB", "CONFIG"]))
    text = screen(state, 1)
    assert "0/3 phases" in text
    assert "FE_PAGES" not in text and " CONFIG " in text


@pytest.mark.parametrize(
    ("status", "code"), [("completed", 0), ("failed", 1), ("partial", 2), ("cancelled", 3)]
)
def test_the_exit_code_follows_how_the_job_ended(status, code):
    script = Script()
    state = WatchState("shop-1")
    for event in [script.accepted(), script.ended(status, 5)]:
        state.apply(event)
    assert state.done and state.exit_code() == code
    assert f"shop-1 · shop · {status}" in screen(state, 60)


def test_a_rejected_request_ends_the_watch_with_its_error():
    script = Script()
    state = WatchState("shop-1")
    state.apply(script("job.rejected", 0, error="mockup image exceeds llm.max_image_bytes"))
    assert state.done and state.exit_code() == 1
    text = screen(state, 1)
    assert "rejected" in text and "exceeds llm.max_image_bytes" in text


def test_a_resumed_job_runs_again_until_it_completes():
    script = Script()
    state = WatchState("shop-1")
    events = [
        script.accepted(phases=["ARCH", "DB"]),
        script.started("ARCH", 0),
        script.completed("ARCH", 2, files=0, tokens=10),
        script.started("DB", 2),
        script.failed("DB", 3, "boom"),
        script.ended("partial", 3, failed=["DB"]),
        script("job.resumed", 60, from_phase="DB", reason="codegend resume"),
        script.started("DB", 60),
    ]
    for event in events:
        state.apply(event)
    assert not state.done
    assert "running" in row(screen(state, 61), "DB")
    state.apply(script.completed("DB", 62, files=3, tokens=20))
    state.apply(script.ended("completed", 62))
    assert state.done and state.exit_code() == 0
    assert "2/2 phases · 1:02 · 3 files" in screen(state, 100)  # the clock stopped at the end


def test_every_job_without_a_job_id_and_finished_ones_fold():
    state = WatchState()
    done, running = Script("done-1"), Script("run-1")
    for event in [done.accepted(), done.ended("completed", 4), running.accepted()]:
        state.apply(event)
    state.apply(running.started("ARCH", 5))
    text = screen(state, 6)
    assert "done-1 · shop · completed" in text and "run-1 · shop · running" in text
    assert text.count(" ARCH ") == 1  # only the running job lists its phases
    assert not state.done


def test_the_spinner_turns_with_the_clock():
    script = Script()
    state = WatchState("shop-1")
    state.apply(script.accepted())
    state.apply(script.started("ARCH", 0))
    phase = state.jobs["shop-1"].phases["ARCH"]
    frames = {spinner_frame(phase, T0 + timedelta(milliseconds=ms)) for ms in range(0, 800, 80)}
    assert len(frames) == 10


def test_a_narrow_screen_keeps_every_phase_on_one_line():
    state = WatchState("shop-1")
    for event in mid_run(Script()):
        state.apply(event)
    text = screen(state, 31.5, width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert " FE_COMPONENTS " in text and len(text.splitlines()) == 16


async def test_follow_stops_when_the_watched_job_ends():
    script = Script()
    events = [script.accepted(), script.ended("partial", 1), script.accepted()]
    closed = []

    async def stream() -> AsyncIterator[Event]:
        try:
            for event in events:
                yield event
                yield event  # every event twice: seen once
        finally:
            closed.append(True)

    seen: list[Event] = []
    state = WatchState("shop-1")
    await follow(stream(), state, seen.append)
    assert [e.type for e in seen] == ["job.accepted", "job.completed"]
    assert closed == [True] and state.exit_code() == 2
