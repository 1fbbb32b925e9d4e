"""Paths that clash with the job's other files, as the phase runner meets them: in a whole
answer, in a cut one, and in files that close mid-stream (a scripted provider of our own
interface; no network here)."""

import asyncio
import json

from daemon.answers import interpret_files
from daemon.contract import GenerationRequest, Usage
from daemon.generation import PhaseHooks, PhaseRunner
from daemon.llm import LLMAnswer
from daemon.paths import PathIndex
from daemon.records import JobRecord
from daemon.settings import load_settings
from daemon.states import PHASE_BY_NAME, JobState

EARLIER = {"frontend/src/App.tsx": "export default 1\n", "backend/app/db": "x\n"}


def answer(files, stop_reason="end_turn"):
    text = json.dumps({"files": files, "complete": True})
    return LLMAnswer(text=text, stop_reason=stop_reason, usage=Usage(output_tokens=5, calls=1))


def file(path):
    return {"path": path, "content": f"# {path}\nVALUE = 1\n"}


class Scripted:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    async def complete(self, call, on_text):
        self.calls.append(call)
        item = self.answers.pop(0)
        for start in range(0, len(item.text), 7):
            on_text(item.text[start : start + 7])
        return item

    async def aclose(self):
        pass


def job():
    request = GenerationRequest.model_validate(
        {"project_name": "p", "mockup": {"kind": "text", "description": "d"}}
    )
    return JobRecord("j", None, request, JobState.BE_MODELS, ["ARCH", "BE_MODELS"], None)


async def run(provider, staged):
    runner = PhaseRunner(provider, load_settings(), asyncio.Semaphore(1))
    hooks = PhaseHooks(checkpoint=staged.extend, job_files=lambda: dict(EARLIER))
    return await runner.run(job(), PHASE_BY_NAME["BE_MODELS"], [], hooks=hooks)


def test_an_answer_that_clashes_with_the_job_is_reported_precisely():
    known = PathIndex(EARLIER)
    result = interpret_files(
        answer([file("frontend/src/app.tsx"), file("backend/app/db/models.py"), file("ok.py")]),
        known,
    )
    assert [f.path for f in result.files] == ["ok.py"]
    assert not result.done
    assert (
        "'frontend/src/app.tsx' differs only in letter case from 'frontend/src/App.tsx'"
        in (result.errors[0])
    )
    assert "needs a folder 'backend/app/db', but 'backend/app/db' is a file" in result.errors[1]


def test_two_files_of_one_answer_may_not_clash_with_each_other():
    result = interpret_files(answer([file("lib/a"), file("lib/a/b.py"), file("Lib/c.py")]))
    assert [f.path for f in result.files] == ["lib/a"]
    assert len(result.errors) == 2


def test_a_cut_answer_reports_clashes_too():
    text = json.dumps({"files": [file("README.md"), file("readme.md"), file("x.py")]})[:-30]
    result = interpret_files(LLMAnswer(text, "max_tokens"), PathIndex())
    assert [f.path for f in result.files] == ["README.md"]
    assert "letter case" in result.errors[0]


def test_the_paths_kept_are_the_nfc_ones():
    result = interpret_files(answer([file("docs/Cafe\u0301.md")]))
    assert [f.path for f in result.files] == ["docs/Caf\u00e9.md"]


async def test_a_clashing_path_is_repaired_and_never_staged():
    provider = Scripted(
        answer([file("backend/app/models.py"), file("frontend/src/app.tsx")]),
        answer([file("backend/app/models.py"), file("backend/app/schemas.py")]),
    )
    staged = []
    outcome = await run(provider, staged)
    assert sorted(f.path for f in outcome.files) == [
        "backend/app/models.py",
        "backend/app/schemas.py",
    ]
    assert "frontend/src/app.tsx" not in {f.path for f in staged}
    assert "backend/app/models.py" in {f.path for f in staged}
    second = json.dumps(provider.calls[1].messages)
    assert "frontend/src/app.tsx" in second and "letter case" in second


async def test_a_file_sent_again_by_its_phase_is_no_clash():
    provider = Scripted(
        LLMAnswer(
            json.dumps({"files": [file("backend/app/models.py")], "complete": False}),
            "end_turn",
            Usage(output_tokens=5, calls=1),
        ),
        answer([file("backend/app/models.py"), file("backend/app/schemas.py")]),
    )
    outcome = await run(provider, [])
    assert sorted(f.path for f in outcome.files) == [
        "backend/app/models.py",
        "backend/app/schemas.py",
    ]
    assert "letter case" not in json.dumps(provider.calls[1].messages)
