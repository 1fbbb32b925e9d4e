"""SIGKILL at each instrumented point (``daemon/chaos.py``), then a restart without the
hook: the run ends as if nothing had happened, and nothing committed is asked for again."""

from __future__ import annotations

import pytest

from tests.chaos.harness import Chaos


def hook(point: str, after: int) -> dict[str, str]:
    return {"CODEGEND_CHAOS_POINT": point, "CODEGEND_CHAOS_AFTER": str(after)}


def die_at(chaos: Chaos, point: str, after: int) -> None:
    process = chaos.spawn(**hook(point, after))
    assert chaos.wait_exit(process) == -9, chaos.log_tail()  # it killed itself there


def test_between_job_creation_and_offset_commit(make_chaos):
    chaos = make_chaos(chunk_delay_s=0.002)
    chaos.submit(2)
    chaos.submit(1, with_request_id=False)  # its job id comes from where it was read
    die_at(chaos, "after_create", 2)  # the second job is in the store, its offset is not
    assert len(chaos.states()) == 2
    chaos.finish()
    chaos.check()  # one job per request: the one created before the kill was not doubled
    assert "duplicate request; no new job" in chaos.log_tail(400)  # and it was read again


@pytest.mark.parametrize(
    ("point", "after"),
    [
        ("mid_stream", 112),  # the 112th streamed delta: inside BE_CORE's third file
        ("after_answer", 3),  # BE_CORE answered whole, its phase not yet committed
        ("after_commit", 2),  # DB committed, its events and files not yet out
    ],
)
def test_killed_at_an_instrumented_point(make_chaos, point, after):
    chaos = make_chaos(chunk_delay_s=0.002)
    chaos.submit(1)
    die_at(chaos, point, after)
    completed_before = chaos.completed_phases()
    chaos.finish()
    figures = chaos.check()
    print(f"\n{point}:\n{figures.summary()}")
    assert figures.kills == 1
    if point == "mid_stream":
        assert 1 <= completed_before < 11
        assert figures.requests_naming_committed_files >= 1  # the phase resumed, not restarted
        assert 0 < figures.respent_file_chars <= figures.cut_tail_chars < 1000
    if point == "after_answer":
        assert figures.requests_naming_committed_files == 1
        assert figures.respent_file_chars == 0  # every file had been committed as it closed
    if point == "after_commit":
        assert completed_before == 2
        assert figures.requests == 11  # the committed phase was not run again
