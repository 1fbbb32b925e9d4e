"""Strings from the events topic (a model's error, a forged phase or step) are drawn
literally by the watch view: rich markup in them is text, never a style or a crash."""

from __future__ import annotations

from daemon.watchview import WatchState
from tests.support.watch_events import Script, screen

MARKUP = "[/x] [bold red]boom[/]"


def test_markup_in_event_strings_is_shown_literally() -> None:
    script = Script()
    state = WatchState(script.job_id)
    events = [
        script.accepted(phases=["ARCH", "DB"]),
        script("phase.started", 0.1, phase="[/p]", step="[/s]", attempt=1),
        script.failed("[/p]", 2.0, MARKUP),
    ]
    for event in events:
        state.apply(event)
    text = screen(state, 3.0, width=200)
    assert "[/p]" in text
    assert "[/x] [bold red]boom[/]" in text
