"""Every parser of model answers on hostile input: it returns (a problem, an error to send
back, a RetryableLLMError), never raises something else, and its work grows linearly."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon import checks, prompts
from daemon.answers import interpret_files, recover_files
from daemon.checks import CheckLimits, check_files, check_project, run_checks
from daemon.checks import content as file_checks
from daemon.checks import scripts as script_checks
from daemon.contract import FileRecord
from daemon.errors import RetryableLLMError
from daemon.llm import LLMAnswer, SseAnswer
from daemon.states.base import GeneratedFile
from daemon.streaming import FileScanner

DEEP = 50_000
DEEP_TOML = '[project]\nname = "x"\ndependencies = ' + "[" * 500 + "]" * 500 + "\n"
UNARY_MINUS = "x = " + "-" * 3000 + "1\n"


# --- the code checks -------------------------------------------------------------------------


def messages(problems: list[checks.Problem]) -> list[str]:
    return [problem.text for problem in problems]


def test_a_deeply_nested_toml_file_is_a_problem_of_that_file():
    found = check_files({"backend/pyproject.toml": DEEP_TOML, "backend/a.py": "import x\n"}, {})
    assert "backend/pyproject.toml: invalid TOML: nested too deeply" in messages(found)
    # as a requirements file it declares nothing; the import is then just unchecked
    assert check_project({"backend/pyproject.toml": DEEP_TOML, "backend/a.py": "import x\n"}) == []


def test_python_that_defeats_the_parser_is_a_problem_of_that_file():
    for content in (UNARY_MINUS, "(" * 3000 + ")" * 3000, "x = [" * 1000 + "]" * 1000):
        (problem,) = check_files({"a.py": content}, {})
        assert problem.kind == "content" and problem.message.startswith("line ")


def test_a_package_json_whose_dependencies_are_not_an_object():
    content = '{"name": "x", "scripts": {"a": "b"}, "dependencies": 5}'
    found = check_files({"web/package.json": content, "web/a.ts": "import 'react'\n"}, {})
    assert messages(found) == [
        "web/a.ts: line 1: package 'react' is not declared in web/package.json",
        'web/package.json: package.json "dependencies" must be an object',
    ]


@pytest.mark.parametrize("content", ["[" * DEEP, '"just a string"', "{"])
def test_a_package_json_it_cannot_read_declares_nothing(content):
    found = check_files({"web/package.json": content, "web/a.ts": "import 'react'\n"}, {})
    assert [p.path for p in found] == ["web/package.json"] and found[0].kind == "content"


def test_deep_tsconfig_and_vite_config_are_read_or_reported():
    files = {"tsconfig.json": "[" * DEEP, "vite.config.ts": "alias: {'@': " * 5000}
    assert "tsconfig.json: invalid JSON: nested too deeply" in messages(check_files(files, {}))


def test_files_over_the_size_cap_are_not_parsed_but_still_resolve():
    big = "x = 1\n" * 300
    found = check_files({"app/big.py": big, "app/main.py": "from app import big\n"}, {}, 1024)
    assert messages(found) == [
        f"app/big.py: not checked: {len(big)} bytes, over jobs.check_max_file_bytes = 1024"
    ]
    assert found[0].kind == "skipped"
    assert [p.kind for p in check_project({"app/big.py": big}, 1024)] == ["skipped"]


def test_many_ambient_patterns_and_aliases_are_bounded():
    declared = "".join(f"declare module 'm{i}/*';\n" for i in range(1000))
    files = {
        "web/package.json": '{"name": "w", "scripts": {"a": "b"}}',
        "web/src/types.ts": declared + "declare module 'exact-name';\n",
        "web/src/a.ts": "import 'exact-name'\nimport 'm0/x'\nimport 'm999/x'\n",
    }
    found = messages(check_files(files, {}))
    # exact names always count; only the first MAX_AMBIENT_PATTERNS wildcards are tried
    assert found == ["web/src/a.ts: line 3: package 'm999' is not declared in web/package.json"]


# JSONC: comments and trailing commas go, strings stay whole, lines stay where they were.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, // c\n}', '{"a": 1 \n}'),
        ('{"a": [1, /* c */ ], }', '{"a": [1  ] }'),
        ('{"u": "http://x/*y*/", "e": "\\"//"}', '{"u": "http://x/*y*/", "e": "\\"//"}'),
        ('{"a": 1 /* two\nlines */}', '{"a": 1 \n}'),
        ("/* never closed", ""),
        ('{"a": "never closed', '{"a": "never closed'),
    ],
)
def test_jsonc_is_stripped_in_one_pass(text, expected):
    assert file_checks._strip_jsonc(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "import a from './a'\n`x ${'import b from \"./b\"'}`\nimport c from './c'",
            ["./a", "./c"],
        ),
        ("const s = 'it\\'s';import d from './d'", ["./d"]),
        ("/* never closed\nimport e from './e'", []),
        ("const t = `never closed\nimport f from './f'", []),
        ("const q = 'never closed\nimport g from './g'", ["./g"]),
        ("import x\nimport y\nexport * from './h'", ["./h"]),
        ("import x\nimport './i'\n", ["./i"]),
        ("import {\n  a,\n  b,\n} from './j'", ["./j"]),
    ],
)
def test_script_scanner_on_unterminated_and_nested_tokens(text, expected):
    assert [spec for _, spec in script_checks._script_imports(text)] == expected


class Counting:
    """A compiled pattern that adds up how much text its searches and matches walk over."""

    def __init__(self, pattern: re.Pattern[str], work: list[int]) -> None:
        self._pattern, self._work = pattern, work

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        found = self._pattern.search(text, pos)
        self._work[0] += (found.end() if found else len(text)) - pos + 1
        return found

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        found = self._pattern.match(text, pos)
        self._work[0] += (found.end() - pos if found else 0) + 1
        return found


def _work(monkeypatch: pytest.MonkeyPatch, run: Any, text: str) -> int:
    work = [0]
    for name in ("_SCRIPT_STOP", "_CLAUSE", "_QUOTED_SPEC", "_CALL_SPEC"):
        monkeypatch.setattr(script_checks, name, Counting(getattr(script_checks, name), work))
    for name in ("_JSONC_STOP", "_JSON_STRING_STOP"):
        monkeypatch.setattr(file_checks, name, Counting(getattr(file_checks, name), work))
    stops = {k: Counting(v, work) for k, v in script_checks._STRING_STOPS.items()}
    monkeypatch.setattr(script_checks, "_STRING_STOPS", stops)
    run(text)
    monkeypatch.undo()
    return work[0]


HOSTILE_TEXTS = {
    "unterminated comments": "/* " * 20_000,
    "imports without from": "import x\n" * 8000,
    "escaped quotes": '"' + '\\"' * 20_000,
    "escaped backticks": "`" + "\\`" * 20_000,
    "escaped single quotes": "'" + "\\'" * 20_000,
    "clauses and keywords": "import a, b, c, import, export\n" * 3000,
    "requires": "require( require('x' " * 5000,
}


@pytest.mark.parametrize("name", list(HOSTILE_TEXTS))
def test_scanners_do_linear_work(monkeypatch, name):
    """Work, not time: the text the scanners' patterns walk over, for n and 2n copies."""
    text = HOSTILE_TEXTS[name]
    for run in (lambda t: list(script_checks._script_imports(t)), file_checks._strip_jsonc):
        single, double = _work(monkeypatch, run, text), _work(monkeypatch, run, text * 2)
        assert single <= 4 * len(text) + 10
        assert double <= 2.2 * single, (single, double)


async def test_checks_past_their_budget_are_skipped_with_a_warning():
    limits = CheckLimits(timeout_s=0.001)  # far less than parsing 200,000 lines takes
    big = {"a.py": "import os\n" * 200_000}
    (skipped,) = await run_checks("check_files", limits, big, {})
    assert skipped.kind == "skipped" and skipped.message == (
        "code checks skipped: they took longer than jobs.check_timeout_s = 0.001 s"
    )
    assert await run_checks("check_files", CheckLimits(), {"a.py": "x = (\n"}, {}) != []


async def test_a_dead_worker_costs_nothing_and_holds_no_secret(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-never-in-a-worker")
    pool = checks.CheckPool(workers=1)
    try:
        assert await pool.run("check_files", ({"a.py": "x = 1\n"}, {}, 1024), 10.0) == []
        (worker,) = pool._idle
        if sys.platform == "linux":
            environ = Path(f"/proc/{worker.process.pid}/environ").read_bytes()
            assert b"ANTHROPIC_API_KEY" not in environ
        worker.process.kill()
        worker.process.wait()
        found = await pool.run("check_files", ({"a.py": "x = (\n"}, {}, 1024), 10.0)
        assert [p.path for p in found] == ["a.py"]
    finally:
        pool.close()


# --- the answer parsers ------------------------------------------------------------------------


def files_text(*files: dict[str, Any], complete: bool = True) -> str:
    return json.dumps({"files": list(files), "complete": complete})


def test_generated_files_refuse_lone_surrogates_precisely():
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at character 3"):
        GeneratedFile(path="abc\ud800", content="x")
    with pytest.raises(ValueError, match="lone surrogate U\\+DFFF at character 0"):
        GeneratedFile(path="a", content="\udfff")
    assert GeneratedFile(path="a", content="\U0001f600 é").content.encode()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"files": [{"path": "a\\ud800", "content": "x"}], "complete": true}', "files.0.path"),
        ('{"files": [{"path": "a", "content": "x\ud800"}], "complete": true}', "files.0.content"),
    ],
    ids=["escaped", "raw"],
)
def test_a_lone_surrogate_is_a_precise_repair(text, error):
    result = interpret_files(LLMAnswer(text, "end_turn"))
    assert not result.files and not result.done
    assert error in result.errors[0] and "lone surrogate U+D800" in result.errors[0]
    assert "\ud800" not in result.errors[0]  # the feedback itself stays valid Unicode
    assert FileScanner().feed(text) == []


def test_deep_nesting_in_an_answer():
    nested = '{"path": "a", "content": "x", "extra": ' + "[" * DEEP + "]" * DEEP + "}"
    text = '{"files": [' + nested + ', {"path": "b", "content": "y"}], "complete": true}'
    result = interpret_files(LLMAnswer(text, "end_turn"))
    assert result.errors == ["the answer is not valid JSON: nested too deeply"]
    assert [f.path for f in FileScanner().feed(text)] == ["b"]
    cut = text[: text.index('"b"')]
    assert [
        f.path for f in recover_files('{"files": [{"path": "k", "content": "z"}, ' + "[" * DEEP)
    ] == ["k"]
    assert interpret_files(LLMAnswer(cut, "max_tokens")).cut


def test_cut_answers_with_a_raw_surrogate_keep_the_files_before_it():
    text = files_text({"path": "k", "content": "z"})[:-20] + ', {"path": "s", "content": "\ud800'
    assert [f.path for f in recover_files(text)] == ["k"]


def test_the_file_scanner_survives_unbalanced_brackets():
    text = ']]]]}}}{"files": [{"path": "a", "content": "b"}]}' + "{" * DEEP
    assert all(isinstance(f, GeneratedFile) for f in FileScanner().feed(text))


# --- the manifest --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("package.json", '{"dependencies": 5}'),
        ("package.json", '{"dependencies": ["react"]}'),
        ("package.json", "[" * DEEP),
        ("package.json", '"x"'),
        ("a.py", UNARY_MINUS),
        ("a.py", "x = 1\0"),
        ("a.ts", "export " + " " * 200_000),
    ],
)
def test_exports_of_anything_is_a_tuple(path, content):
    assert prompts.exports_of(path, content) == ()
    record = FileRecord(path=path, sha256="0" * 64, size=len(content), content=content)
    assert prompts.render_manifest([record]) == path


def test_exports_of_a_package_json_lists_its_dependencies():
    assert prompts.exports_of("package.json", '{"dependencies": {"vite": "5", "3": "x"}}') == (
        "3",
        "vite",
    )


# --- the stream ----------------------------------------------------------------------------


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


@pytest.mark.parametrize(
    "body",
    [
        b"data: x\n\n",
        b"data: [1]\n\n",
        b"data: \xff\xfe\n\n",
        b"data: " + b"[" * DEEP + b"\n\n",
        sse({"type": "content_block_delta", "delta": 5}),
        sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}),
        sse({"type": "content_block_delta", "delta": {"type": "text_delta"}}),
        b"data: 12345678901234567890" + b"9" * 5000 + b"\n\n",
    ],
)
def test_a_garbled_stream_is_a_retryable_stream_error(body):
    with pytest.raises(RetryableLLMError) as caught:
        SseAnswer(lambda text: None).feed(body)
    assert caught.value.kind == "stream" and str(caught.value).startswith("garbled stream")


def test_odd_but_harmless_events_are_passed_over():
    answer = SseAnswer(lambda text: None)
    answer.feed(
        sse(
            {"type": "message_start", "message": 5},
            {"type": "message_start", "message": {"usage": {"input_tokens": 10**30}}},
            {"type": "message_delta", "delta": [], "usage": {"output_tokens": True}},
            {"type": "message_delta", "delta": {"stop_reason": 7}, "usage": "many"},
            {"type": 5},
            {"no": "type"},
            {"type": "content_block_delta", "delta": {"type": "thinking_delta", "text": 5}},
        )
    )
    answer.feed(sse({"type": "message_stop"}))
    result = answer.result({})
    assert (result.stop_reason, result.usage.input_tokens, result.usage.output_tokens) == (
        "end_turn",
        0,
        0,
    )


def test_an_error_event_of_any_shape_is_an_llm_error():
    with pytest.raises(Exception) as caught:
        SseAnswer(lambda text: None).feed(sse({"type": "error", "error": [1]}))
    assert caught.type.__name__ == "PermanentLLMError"


def test_an_answer_past_its_byte_cap_ends_as_a_stream_error():
    seen: list[str] = []
    answer = SseAnswer(seen.append, max_bytes=200_000)
    piece = sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 999}})
    with pytest.raises(RetryableLLMError, match="llm.max_answer_bytes = 200000 bytes") as caught:
        for _ in range(1000):
            answer.feed(piece)
    assert caught.value.kind == "stream" and 150_000 < len("".join(seen)) <= 200_000


def test_a_line_in_many_pieces_is_joined_once():
    text = "y" * 200_000
    body = sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}})
    seen: list[str] = []
    answer = SseAnswer(seen.append)
    for start in range(0, len(body), 7):
        answer.feed(body[start : start + 7])
    assert seen == [text]


def test_the_providers_limits_default_to_the_settings_defaults():
    from daemon.llm import DEFAULT_CALL_DEADLINE_S, DEFAULT_MAX_ANSWER_BYTES
    from daemon.settings import LLMSettings

    llm = LLMSettings()
    assert (llm.call_deadline_s, llm.max_answer_bytes) == (
        DEFAULT_CALL_DEADLINE_S,
        DEFAULT_MAX_ANSWER_BYTES,
    )
