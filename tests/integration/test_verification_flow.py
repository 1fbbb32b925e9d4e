"""VERIFY end to end on the task-tracker example, whose answers make the typical mistakes.

The cassette's phases write the files a careless model writes: a page importing a module
path that does not exist and calling an endpoint the backend does not have, a component
importing a name its helper module does not export, and a component cut short by a
placeholder. The placeholder is the phase's own to fix (its content check asks at once);
the rest cross phases and are VERIFY's, which sends each writer phase one repair call.
Runs in the mode CODEGEND_TEST_EXECUTION selects (``make test`` runs both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.contract import Event
from daemon.llm import LLMAnswer, LLMCall, ReplayProvider, TextSink
from daemon.store import Store
from tests.support.daemons import collect, running
from tests.support.topics import produce

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "task-tracker.json"
CASSETTE = ROOT / "examples" / "cassettes" / "task-tracker"
JOB = "flawed-1"
LIST_PAGE = "frontend/src/pages/TaskListPage.tsx"
CARD = "frontend/src/components/TaskCard.tsx"
FORM = "frontend/src/components/TaskForm.tsx"


class Capturing:
    """The cassette's answers, with every call kept to read what the daemon asked."""

    def __init__(self, cassette: Path) -> None:
        self._replay = ReplayProvider(cassette)
        self.calls: list[LLMCall] = []

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        self.calls.append(call)
        return await self._replay.complete(call, on_text)

    async def aclose(self) -> None:
        await self._replay.aclose()


def prompt(call: LLMCall) -> str:
    """The last text block of a call: the phase's own part of the prompt."""
    return call.messages[-1]["content"][-1]["text"]


def answer_files(name: str) -> dict[str, str]:
    text = json.loads((CASSETTE / f"{name}.json").read_text())["response"]["text"]
    return {item["path"]: item["content"] for item in json.loads(text)["files"]}


@dataclass(frozen=True)
class Run:
    events: list[Event]
    calls: list[LLMCall]
    project: dict[str, str]
    store: Store


@pytest.fixture
async def run(make_settings) -> Run:
    settings = make_settings(llm={"provider": "replay", "cassette_dir": CASSETTE})
    model = Capturing(CASSETTE)
    request = {**json.loads(EXAMPLE.read_text()), "request_id": JOB}
    async with running(settings, llm=model):
        await produce(settings, json.dumps(request).encode())
        events = await collect(settings, JOB)
    out = settings.output.dir / JOB
    project = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    return Run(events, model.calls, project, Store(settings.store.path))


def verify_prompts(run: Run) -> list[str]:
    return [prompt(call) for call in run.calls if call.phase == "VERIFY"]


async def test_every_call_is_answered_and_the_job_completes(run: Run) -> None:
    done = run.events[-1]
    assert done.type == "job.completed" and done.status == "completed", done
    assert done.files_total == 44
    assert [(c.phase, c.call) for c in run.calls if c.phase in ("FE_COMPONENTS", "VERIFY")] == [
        ("FE_COMPONENTS", 1),
        ("FE_COMPONENTS", 2),
        ("VERIFY", 1),
        ("VERIFY", 2),
    ]
    # ARCH's plan takes three calls within its budget (the first cut at max_tokens); one
    # call for every other phase: no conformance or code-check fix was asked
    assert [c.call for c in run.calls if c.phase == "ARCH"] == [1, 2, 3]
    others = [c.phase for c in run.calls if c.phase not in ("ARCH", "FE_COMPONENTS", "VERIFY")]
    assert sorted(others) == sorted(
        ["DB", "BE_CORE", "BE_MODELS", "BE_ROUTES", "BE_UTILS"]
        + ["FE_SETUP", "FE_CORE", "FE_PAGES", "CONFIG"]
    )
    recorded = run.store.calls(JOB)
    assert len(recorded) == 16 and all(c.error is None for c in recorded)
    warned = [e for e in run.events if e.type == "phase.completed" and e.warnings]
    assert warned == [], [(e.phase, e.warnings) for e in warned]


async def test_the_placeholder_is_fixed_in_its_own_phase(run: Run) -> None:
    fix = next(c for c in run.calls if (c.phase, c.call) == ("FE_COMPONENTS", 2))
    text = prompt(fix)
    assert f"{FORM}: line 45: placeholder instead of code: '... rest of the component'" in text
    # the only fix a phase asked for (the other phases made one call each); the mistakes
    # that cross phases are not in it: they are VERIFY's
    assert "does not resolve" not in text and "exports only" not in text
    assert "matches no backend route" not in text
    assert "rest of the component omitted" not in run.project[FORM]


async def test_verify_finds_each_planted_mistake_and_asks_its_writer(run: Run) -> None:
    pages, components = verify_prompts(run)
    assert "written by phase FE_PAGES" in pages
    assert f"- {LIST_PAGE}: line 4: import '../components/TaskCrd' does not resolve" in pages
    assert f"- {LIST_PAGE}: line 39: GET /api/stats matches no backend route" in pages
    assert "=== frontend/src/pages/TaskListPage.tsx ===" in pages
    assert "written by phase FE_COMPONENTS" in components
    assert (
        f"- {CARD}: line 3: imports formatDueDate from ../utils/format "
        "(frontend/src/utils/format.ts), which exports only formatDate, statusLabel" in components
    )
    # the file the name is missing from is shown with the failing one
    assert "=== frontend/src/utils/format.ts ===" in components


async def test_the_summary_says_everything_was_fixed_in_one_round(run: Run) -> None:
    verified = next(e for e in run.events if e.type == "phase.completed" and e.phase == "VERIFY")
    summary = run.events[-1].verification
    assert summary is not None and summary == verified.verification
    assert summary.problems_before >= 3
    assert summary.problems_before == 3
    assert summary.problems_after == 0 and summary.remaining == []
    assert summary.rounds == 1 and summary.repair_calls == 2
    assert summary.tiers == ["static"] and summary.builds is None


async def test_the_exported_project_has_the_repaired_files(run: Run) -> None:
    expected: dict[str, str] = {}
    for entry in sorted(CASSETTE.glob("[A-Z]*.[0-9][0-9].json")):
        if not entry.name.startswith("ARCH"):
            expected.update(answer_files(entry.stem))
    assert run.project == expected
    page, card = run.project[LIST_PAGE], run.project[CARD]
    assert 'from "../components/TaskCard"' in page and "TaskCrd" not in page
    assert "/stats" not in page and "useMemo" in page
    assert "formatDueDate" not in card and "formatDate(task.due_date)" in card
    assert run.project[FORM].count("<label") == 5
