"""The phase runner against a scripted provider of our own interface (no network here)."""

import asyncio
import json

import pytest

from daemon.answers import interpret_files, recover_files
from daemon.contract import GenerationRequest, Usage
from daemon.errors import PermanentLLMError, PhaseFailed
from daemon.generation import PhaseRunner
from daemon.llm import LLMAnswer
from daemon.records import JobRecord
from daemon.settings import load_settings
from daemon.states import PHASE_BY_NAME, JobState
from tests.support.scripted_llm import Scripted, answer

FILES = [{"path": f"backend/app/m{i}.py", "content": f"X{i} = {i}\n" * 5} for i in range(4)]


def cut_inside_file(index):
    """A cut answer whose text ends inside the content string of file ``index``."""
    text = json.dumps({"files": FILES, "complete": True})
    marker = json.dumps(FILES[index]["content"])[:8]
    position = text.index(marker, text.index(FILES[index]["path"])) + 5
    return text[:position]


def job():
    request = GenerationRequest.model_validate(
        {"project_name": "p", "mockup": {"kind": "text", "description": "d"}}
    )
    return JobRecord(
        job_id="j",
        request_id=None,
        request=request,
        state=JobState.DB,
        planned=["ARCH", "DB"],
        plan=None,
    )


async def run(provider, phase="DB", **llm):
    settings = load_settings(llm=llm)
    runner = PhaseRunner(provider, settings, asyncio.Semaphore(1))
    return await runner.run(job(), PHASE_BY_NAME[phase], [])


def test_recover_keeps_only_closed_files():
    text = cut_inside_file(2)
    assert [f.path for f in recover_files(text)] == [FILES[0]["path"], FILES[1]["path"]]
    assert recover_files("") == []
    assert recover_files('{"fi') == []


@pytest.mark.parametrize("cut", ["\\", "\\u00", "\\n"])
def test_recover_cut_mid_escape(cut):
    head = json.dumps({"files": FILES[:1], "complete": True})[: -len('], "complete": true}')]
    text = head + ', {"path": "b.py", "content": "abc' + cut
    assert [f.path for f in recover_files(text)] == [FILES[0]["path"]]


def test_unsafe_paths_are_dropped_and_reported():
    result = interpret_files(
        answer({"files": [FILES[0], {"path": "../x", "content": ""}], "complete": True})
    )
    assert [f.path for f in result.files] == [FILES[0]["path"]]
    assert not result.done and "unsafe path '../x'" in result.errors[0]


async def test_cut_answer_continues_with_the_rest_named():
    provider = Scripted(
        LLMAnswer(cut_inside_file(2), "max_tokens", Usage(output_tokens=100, calls=1)),
        answer({"files": FILES[2:], "complete": True}),
    )
    outcome = await run(provider)
    assert [f.path for f in outcome.files] == [f["path"] for f in FILES]
    follow_up = provider.calls[1].messages[0]["content"][-1]["text"]
    assert "already produced" in follow_up
    assert FILES[0]["path"] in follow_up and FILES[1]["path"] in follow_up
    assert FILES[2]["path"] not in follow_up
    assert outcome.usage.calls == 2 and outcome.usage.output_tokens == 105


async def test_cut_within_the_first_file_raises_the_budget():
    provider = Scripted(
        LLMAnswer(cut_inside_file(0), "max_tokens", Usage(calls=1)),
        answer({"files": FILES, "complete": True}),
    )
    outcome = await run(provider)
    assert len(outcome.files) == 4
    assert [c.max_tokens for c in provider.calls] == [2000, 4000]


async def test_a_file_that_never_fits_fails_clearly():
    cut = LLMAnswer(cut_inside_file(0), "max_tokens", Usage(calls=1))
    with pytest.raises(PhaseFailed, match="does not fit in max_tokens=4000"):
        await run(Scripted(cut, cut, cut), max_tokens_ceiling=4000)


async def test_invalid_json_is_repaired_with_the_error_fed_back():
    provider = Scripted(
        LLMAnswer('{"files": [}', "end_turn", Usage(calls=1)),
        answer({"files": FILES[:1], "complete": True}),
    )
    outcome = await run(provider)
    assert len(outcome.files) == 1
    assert "not valid JSON" in provider.calls[1].messages[0]["content"][-1]["text"]


async def test_repairs_are_bounded():
    bad = LLMAnswer("nope", "end_turn", Usage(calls=1))
    with pytest.raises(PhaseFailed, match="after 1 repairs") as failure:
        await run(Scripted(bad, bad, bad), max_repairs=1)
    assert failure.value.usage.calls == 2


async def test_refusal_is_re_asked():
    provider = Scripted(
        LLMAnswer("", "refusal", Usage(calls=1)), answer({"files": FILES, "complete": True})
    )
    assert len((await run(provider)).files) == 4


async def test_incomplete_answer_asks_for_more():
    provider = Scripted(
        answer({"files": FILES[:2], "complete": False}),
        answer({"files": FILES[2:], "complete": True}),
    )
    assert len((await run(provider)).files) == 4


def request_bodies(provider):
    return [json.dumps([c.model, c.max_tokens, c.messages], sort_keys=True) for c in provider.calls]


@pytest.mark.parametrize(
    "stall",
    [
        pytest.param({"files": FILES[:1], "complete": False}, id="repeats-files"),
        pytest.param({"files": [], "complete": False}, id="empty-list"),
    ],
)
async def test_an_answer_that_adds_nothing_changes_the_next_call_then_ends_the_phase(stall):
    first = answer({"files": FILES[:1], "complete": False})
    provider = Scripted(first, *[answer(stall)] * 3)
    outcome = await run(provider)
    assert [f.path for f in outcome.files] == [FILES[0]["path"]]
    bodies = request_bodies(provider)
    assert len(bodies) == 4 and len(set(bodies)) == 4  # never the same request twice
    second, third = (provider.calls[i].messages[0]["content"][-1]["text"] for i in (2, 3))
    said = "repeated files" if stall["files"] else "file list was empty"
    assert said in second and '"complete": true' in second
    assert third.count("Again, your previous answer added no new file") == 1
    assert any("'not complete' 3 times in a row" in w for w in outcome.warnings)


async def test_a_stall_followed_by_new_files_goes_on():
    stall = answer({"files": FILES[:1], "complete": False})
    provider = Scripted(
        stall,
        stall,
        answer({"files": FILES[1:2], "complete": False}),
        stall,
        answer({"files": FILES[2:], "complete": True}),
    )
    outcome = await run(provider)
    assert len(outcome.files) == 4 and not outcome.warnings
    assert len(set(request_bodies(provider))) == 5


async def test_repeated_invalid_answers_are_asked_differently_each_time():
    refusal = answer({"files": [], "complete": False}, stop_reason="refusal")
    provider = Scripted(refusal, refusal, refusal)
    with pytest.raises(PhaseFailed, match="still invalid after 2 repairs"):
        await run(provider)
    assert len(set(request_bodies(provider))) == 3
    assert "same problem" in provider.calls[2].messages[0]["content"][-1]["text"]


async def test_calls_per_phase_are_bounded():
    provider = Scripted(*(answer({"files": [f], "complete": False}) for f in FILES))
    with pytest.raises(PhaseFailed, match="not complete after 3 calls"):
        await run(provider, max_calls_per_phase=3)
    assert len(set(request_bodies(provider))) == 3


async def test_permanent_error_fails_the_phase():
    with pytest.raises(PhaseFailed, match="no key"):
        await run(Scripted(PermanentLLMError("no key")))


def architecture(files=(), complete=True):
    from daemon.generation import api_schema
    from daemon.states.base import ArchAnswer
    from tests.support.messages_server import example_for_schema

    plan = example_for_schema(api_schema(ArchAnswer))
    plan.update(files=list(files), complete=complete)
    return plan


def planned(n, phase="DB"):
    return {
        "path": f"database/f{n}.sql",
        "phase": phase,
        "purpose": "p",
        "exports": [{"name": f"t{n}", "kind": "table", "signature": f"t{n}(id int)"}],
        "imports": [f"database/f{n - 1}.sql"] if n else [],
    }


async def test_arch_cut_before_the_plan_retries_with_a_larger_budget():
    provider = Scripted(answer(architecture(), "max_tokens", cut_at=50), answer(architecture()))
    outcome = await run(provider, phase="ARCH")
    assert outcome.plan is not None and outcome.files == []
    assert [c.max_tokens for c in provider.calls] == [2000, 4000]


async def test_a_file_plan_cut_anywhere_continues_with_the_rest():
    """A plan of 80 files over answers cut inside an entry: every entry arrives once, the
    architecture closes the first answer, and later calls ask only for the rest."""
    entries = [planned(n) for n in range(80)]
    first = json.dumps(architecture(entries))
    cut_1 = first.index(entries[30]["path"]) + 5  # inside entry 30
    second = json.dumps({"files": entries[29:], "complete": True})
    cut_2 = second.index('"imports"', second.index(entries[60]["path"])) + 16  # in its last list
    provider = Scripted(
        LLMAnswer(text=first[:cut_1], stop_reason="max_tokens", usage=Usage()),
        LLMAnswer(text=second[:cut_2], stop_reason="max_tokens", usage=Usage()),
        answer({"files": entries[60:], "complete": True}),
    )
    outcome = await run(provider, phase="ARCH")
    assert outcome.plan is not None
    assert [f.model_dump() for f in outcome.plan.files] == entries
    schemas = [c.schema.get("title", "") for c in provider.calls]
    assert schemas[1:] == ["FilePlanMore", "FilePlanMore"]
    asked = provider.calls[2].messages[0]["content"][-1]["text"]
    assert "Files of this phase already planned" in asked and entries[59]["path"] in asked
    assert f"- {entries[60]['path']}\n" not in asked  # the entry cut in its imports list


async def test_a_planned_file_of_no_file_phase_is_repaired():
    bad = {**planned(1), "phase": "ARCH"}
    # The architecture came with the first answer: the repair asks for the rest of the plan.
    provider = Scripted(
        answer(architecture([planned(0), bad])), answer({"files": [planned(1)], "complete": True})
    )
    outcome = await run(provider, phase="ARCH")
    assert [f.path for f in outcome.plan.files] == ["database/f0.sql", "database/f1.sql"]
    feedback = provider.calls[1].messages[0]["content"][-1]["text"]
    assert "names phase 'ARCH'" in feedback


async def test_arch_checkpoints_its_plan_and_a_restart_continues_it():
    """Each answer that adds to the plan is handed to the store; a job whose ARCH was cut
    short (its plan stored in part) continues the file plan instead of paying it again."""
    from daemon.generation import PhaseHooks

    entries = [planned(n) for n in range(6)]
    staged = []
    first = json.dumps(architecture(entries))
    cut = first.index(entries[4]["path"]) + 5
    provider = Scripted(
        LLMAnswer(text=first[:cut], stop_reason="max_tokens", usage=Usage()),
        answer({"files": entries[3:], "complete": True}),
    )
    runner = PhaseRunner(provider, load_settings(), asyncio.Semaphore(1))
    hooks = PhaseHooks(checkpoint_plan=staged.append)
    await runner.run(job(), PHASE_BY_NAME["ARCH"], [], hooks=hooks)
    assert [len(plan.files) for plan in staged] == [4, 6]  # the entry being cut waits

    restarted = job()
    restarted.plan = staged[0]  # the store's plan after the first answer
    provider = Scripted(answer({"files": entries[3:], "complete": True}))
    runner = PhaseRunner(provider, load_settings(), asyncio.Semaphore(1))
    outcome = await runner.run(restarted, PHASE_BY_NAME["ARCH"], [])
    assert [f.path for f in outcome.plan.files] == [e["path"] for e in entries]
    assert provider.calls[0].schema.get("title") == "FilePlanMore"
    assert outcome.plan.summary == staged[0].summary


def test_which_problems_go_back_to_the_phase_and_which_are_only_said():
    from daemon.checks import Problem
    from daemon.generation import _fixable, _off_plan

    found = [
        Problem("backend/app/main.py", "line 3: invalid syntax"),
        Problem("backend/app/deps.py", "does not define 'get_db'", "plan"),
        Problem("backend/app/extra.py", "is not one of BE_CORE's planned files", "unplanned"),
        Problem("backend/app/main.py", "line 1: import '.models' does not resolve", "import"),
        Problem("frontend/src/App.tsx", "line 1: import './Card' does not resolve", "import"),
        Problem("backend/app/main.py", "line 2: module 'jose' is not declared", "dependency"),
        Problem("backend/app/big.py", "not checked", "skipped"),
    ]
    back = _fixable(found, pending_areas=frozenset({"frontend/"}))
    assert back == found[:2] + found[3:4]  # a later phase writes to frontend/
    assert _off_plan(found) == [found[2]]
