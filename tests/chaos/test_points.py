"""SIGKILL at each instrumented point (``daemon/chaos.py``), then a restart without the
hook: the run ends as if nothing had happened, and nothing committed is asked for again.

The kills are placed by counting (the n-th delta, answer, commit) in the phase order of
the table, so these runs are sequential whatever the environment says.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from daemon.generation import api_schema
from daemon.states import PHASE_BY_NAME
from tests.chaos.harness import Chaos, file_object, hook
from tests.support.messages_server import STREAM_CHUNK_CHARS, example_for_schema, planned_files


def sequential(**env: str) -> dict[str, Any]:
    """Quick answers, phases in the order of the table (the kills are placed by counting)."""
    return {
        "latency_s": (0.01, 0.05),
        "chunk_delay_s": 0.002,
        "CODEGEND_JOBS__EXECUTION": "sequential",
        **env,
    }


def die_at(chaos: Chaos, point: str, after: int) -> None:
    process = chaos.spawn(**hook(point, after))
    assert chaos.wait_exit(process) == -9, chaos.log_tail()  # it killed itself there


def deltas(text: str) -> int:
    return math.ceil(len(text) / STREAM_CHUNK_CHARS)


def delta_inside_be_core(chaos: Chaos, file_index: int) -> int:
    """The number of the streamed delta that falls inside BE_CORE's file ``file_index``
    (a sequential run of one job streams ARCH, DB, then BE_CORE)."""
    arch = example_for_schema(api_schema(PHASE_BY_NAME["ARCH"].output_model))
    arch.update(files=planned_files(chaos.server.phase_files), complete=True)  # as the fake
    plan = json.dumps(arch)

    def answer(phase: str) -> str:
        listed = [{"path": p, "content": c} for p, c in chaos.server.phase_files[phase]]
        return json.dumps({"files": listed, "complete": True})

    be_core = answer("BE_CORE")
    path, content = chaos.server.phase_files["BE_CORE"][file_index]
    middle = be_core.index(file_object(path, content)) + len(file_object(path, content)) // 2
    return deltas(plan) + deltas(answer("DB")) + middle // STREAM_CHUNK_CHARS + 1


def test_between_job_creation_and_offset_commit(make_chaos):
    chaos = make_chaos(**sequential())
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
        ("mid_stream", None),  # inside BE_CORE's third file
        ("after_answer", 3),  # BE_CORE answered whole, its phase not yet committed
        ("after_commit", 2),  # DB committed, its events and files not yet out
    ],
)
def test_killed_at_an_instrumented_point(make_chaos, point, after):
    chaos = make_chaos(**sequential())
    chaos.submit(1)
    die_at(chaos, point, after or delta_inside_be_core(chaos, 2))
    completed_before = chaos.completed_phases()
    chaos.finish()
    figures = chaos.check()
    print(f"\n{point}:\n{figures.summary()}")
    assert figures.kills == 1
    if point == "mid_stream":
        assert completed_before == 2  # ARCH and DB
        assert figures.requests_naming_committed_files >= 1  # the phase resumed, not restarted
        assert 0 < figures.respent_file_chars <= figures.cut_tail_chars < 1000
    if point == "after_answer":
        assert figures.requests_naming_committed_files == 1
        assert figures.respent_file_chars == 0  # every file had been committed as it closed
    if point == "after_commit":
        assert completed_before == 2
        assert figures.requests == 11  # the committed phase was not run again


def test_killed_between_publishing_and_marking_published(make_chaos):
    """The last phase committed (the job completed) and the process died; the next start
    publishes its events, too large for the broker and so stored without contents, and dies
    between the broker's acknowledgement and marking them; the start after that publishes
    them again, the same, and the output folder still gets the files (from the store)."""
    chaos = make_chaos(**sequential(CODEGEND_KAFKA__MAX_PUBLISH_BYTES="2048"))
    chaos.submit(1)
    die_at(chaos, "after_commit", 12)  # VERIFY committed, the job with it
    assert chaos.states() == {"p001": "COMPLETED"}
    die_at(chaos, "after_publish", 1)
    chaos.finish()
    figures = chaos.check()
    print(f"\nafter_publish:\n{figures.summary()}")
    assert figures.events_raw > figures.events_distinct  # re-published, same event_ids
    assert figures.requests == 11  # a completed job calls no model again
    events = chaos.events["chaos-p001"]
    config = next(e for e in events if e.type == "phase.completed" and e.phase == "CONFIG")
    assert config.files and not any(f.content for f in config.files)  # published without
