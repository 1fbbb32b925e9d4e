"""The VERIFY state's repair rounds against a scripted provider (daemon.verification)."""

import asyncio
import json

from daemon.contract import GenerationRequest, Usage
from daemon.generation import PhaseHooks, PhaseRunner
from daemon.llm import LLMAnswer
from daemon.records import JobRecord
from daemon.settings import load_settings
from daemon.states import PHASE_BY_NAME, JobState
from daemon.states.base import ArchPlan, PlannedFile
from tests.support.scripted_llm import Scripted

PAGE = "frontend/src/pages/Home.tsx"
CARD = "frontend/src/components/Card.tsx"
BROKEN = (
    "import { Card } from '../components/Card';\nexport default function Home() { return Card; }\n"
)
FIXED = "import { CardView } from '../components/Card';\nexport default function Home() { return CardView; }\n"
PROJECT = {CARD: "export const CardView = () => null;\n", PAGE: BROKEN}


def job(planned=("ARCH", "FE_PAGES", "FE_COMPONENTS", "VERIFY")):
    request = GenerationRequest.model_validate(
        {"project_name": "p", "mockup": {"kind": "text", "description": "d"}}
    )
    plan = ArchPlan(
        summary="s",
        backend_package="app",
        pages=[],
        components=[],
        endpoints=[],
        tables=[],
        dependencies_backend=[],
        dependencies_frontend=[],
        files=[
            PlannedFile(path=PAGE, phase="FE_PAGES", purpose="home", exports=[], imports=[CARD]),
            PlannedFile(path=CARD, phase="FE_COMPONENTS", purpose="card", exports=[], imports=[]),
        ],
    )
    return JobRecord(
        job_id="j",
        request_id=None,
        request=request,
        state=JobState.VERIFY,
        planned=list(planned),
        plan=plan,
    )


def files_answer(*files):
    text = json.dumps({"files": [{"path": p, "content": c} for p, c in files], "complete": True})
    return LLMAnswer(text=text, stop_reason="end_turn", usage=Usage(output_tokens=7, calls=1))


async def verify(provider, record=None, **verify_settings):
    settings = load_settings(verify=verify_settings)
    runner = PhaseRunner(provider, settings, asyncio.Semaphore(1))
    staged = []
    hooks = PhaseHooks(checkpoint=staged.extend, job_files=lambda: dict(PROJECT))
    outcome = await runner.verify(
        record or job(), PHASE_BY_NAME["VERIFY"], dict(PROJECT), {}, [], hooks
    )
    return outcome, staged


async def test_a_problem_goes_to_the_phase_that_wrote_the_file_and_is_fixed():
    provider = Scripted(files_answer((PAGE, FIXED)))
    outcome, staged = await verify(provider)
    summary = outcome.verification
    assert (summary.problems_before, summary.problems_after) == (1, 0)
    assert (summary.rounds, summary.repair_calls) == (1, 1)
    assert summary.tiers == ["static"] and summary.builds is None
    assert [f.path for f in outcome.files] == [PAGE] and [f.path for f in staged] == [PAGE]
    asked = provider.calls[0].messages[0]["content"][-1]["text"]
    assert "written by phase FE_PAGES" in asked
    assert "exports only CardView" in asked  # the precise error
    assert f"=== {CARD} ===" in asked  # and the file it refers to, as it is
    assert provider.calls[0].phase == "VERIFY" and provider.calls[0].call == 1


async def test_a_round_that_does_not_lower_the_problems_ends_the_repairs():
    provider = Scripted(files_answer((PAGE, BROKEN)), files_answer((PAGE, FIXED)))
    outcome, _ = await verify(provider)
    summary = outcome.verification
    assert (summary.rounds, summary.repair_calls, summary.problems_after) == (1, 1, 1)
    assert len(provider.calls) == 1  # the second answer was never asked for
    assert any("did not lower" in w for w in outcome.warnings)
    assert summary.remaining and "Card" in summary.remaining[0]


async def test_rounds_are_bounded_by_max_rounds():
    # 0 rounds (a setting a user may choose): the problems are reported, nothing is called.
    outcome, _ = await verify(Scripted(), max_rounds=0)
    assert (outcome.verification.rounds, outcome.verification.problems_after) == (0, 1)


async def test_files_of_phases_the_job_did_not_run_are_reported_not_repaired():
    outcome, _ = await verify(Scripted(), job(planned=("ARCH", "FE_COMPONENTS", "VERIFY")))
    assert outcome.verification.repair_calls == 0
    assert outcome.verification.problems_after == 1


async def test_with_the_toolchain_calls_are_matched_against_the_booted_apps_routes(monkeypatch):
    from daemon.verify import toolchain

    openapi = {"paths": {"/api/cars": {"get": {}}}}
    report = toolchain.ToolchainReport(steps=[], problems=[], builds=True, openapi=openapi)
    monkeypatch.setattr(toolchain, "toolchain_available", lambda: None)
    monkeypatch.setattr(toolchain, "run_toolchain", lambda files, **options: report)
    page = "frontend/src/pages/Cars.tsx"
    files = {page: "export async function load() { return fetch('/api/trucks'); }\n"}
    settings = load_settings(verify={"toolchain": True, "max_rounds": 0})
    runner = PhaseRunner(Scripted(), settings, asyncio.Semaphore(1))
    hooks = PhaseHooks(job_files=lambda: dict(files))

    outcome = await runner.verify(job(), PHASE_BY_NAME["VERIFY"], dict(files), {}, [], hooks)

    summary = outcome.verification
    assert summary.tiers == ["static", "toolchain"] and summary.builds is True
    assert any(
        text.startswith(f"{page}: line 1: GET /api/trucks matches no backend route")
        and "GET /api/cars (openapi.json)" in text
        for text in summary.remaining
    ), summary.remaining
