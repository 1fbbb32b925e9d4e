"""An event without its files' contents: the smaller form the relay publishes when an
event is too large, and the one a restore falls back to when a file was rewritten after
the event (its record carries no contents; docs/cluster-design.md section 1.2)."""

from __future__ import annotations

from daemon.contract import PhaseCompletedEvent


def contents_left_out(
    event: PhaseCompletedEvent, was: str, export: str
) -> tuple[str, PhaseCompletedEvent]:
    """The event without its files' contents, with the warning that says so, and the note."""
    files = [f.model_copy(update={"content": ""}) for f in event.files]
    note = f"file contents left out: {was}; {export}"
    return note, event.model_copy(update={"files": files, "warnings": [*event.warnings, note]})
