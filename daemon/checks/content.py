"""The checks of one file on its own: empty files, placeholders, JSON (and JSONC), TOML,
package.json, and Python syntax (through the project's parse cache)."""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from daemon.checks.problem import Problem

if TYPE_CHECKING:
    from daemon.checks.project import _Project

_MAY_BE_EMPTY = frozenset({"__init__.py", ".gitkeep", ".keep", "py.typed", ".nojekyll"})
# matched against the lower-cased text, and only when one of the cheap keywords occurs
_PLACEHOLDER_KEYWORDS = (
    "rest of",
    "existing ",
    "previous ",
    "remaining ",
    "other ",
    "todo",
    "brevity",
    " here",
)
_PLACEHOLDER = re.compile(
    r"\.\.\.\s*(?:\(\s*)?rest of (?:the )?(?:code|file|implementation|component|module)"
    r"|\brest of (?:the )?(?:code|file|implementation|component|module|class)"
    r" (?:remains|is unchanged|unchanged|goes here|omitted|as before)"
    r"|\.\.\.\s*(?:existing|previous|remaining|other) (?:code|imports|methods|routes|functions"
    r"|components|fields|styles)\b"
    r"|\btodo:?\s*implement\b"
    r"|\b(?:omitted|elided|truncated) for brevity"
    r"|\byour (?:code|implementation|logic) (?:goes )?here\b"
)
_JSONC_NAMES = re.compile(r"(?:^|/)(?:[tj]sconfig[^/]*\.json|\.vscode/[^/]+\.json|[^/]+\.jsonc)$")


_DEPENDENCY_KEYS = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")


def _content_problems(path: str, content: str, project: _Project) -> Iterator[Problem]:
    name = posixpath.basename(path)
    if not content.strip():
        if name not in _MAY_BE_EMPTY:
            yield Problem(path, "the file is empty")
        return
    if found := _placeholder(content):
        yield Problem(path, found)
    if path.endswith(".py"):
        if (error := project.python_module(path).error) is not None:
            yield Problem(path, error)
    elif path.endswith((".json", ".jsonc")):
        yield from _json_problems(path, content)
    elif path.endswith(".toml"):
        try:
            tomllib.loads(content)
        except tomllib.TOMLDecodeError as exc:
            yield Problem(path, f"invalid TOML: {exc}")
        except RecursionError:
            yield Problem(path, "invalid TOML: nested too deeply")


def _placeholder(content: str) -> str | None:
    lowered = content.lower()
    if not any(keyword in lowered for keyword in _PLACEHOLDER_KEYWORDS):
        return None
    if found := _PLACEHOLDER.search(lowered):
        return f"line {_line_of(lowered, found.start())}: placeholder instead of code: '{found[0]}'"
    return None


def _json_problems(path: str, content: str) -> Iterator[Problem]:
    try:
        document = _load_json(path, content)
    except json.JSONDecodeError as exc:
        yield Problem(path, f"line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
        return
    except RecursionError:
        yield Problem(path, "invalid JSON: nested too deeply")
        return
    if posixpath.basename(path) == "package.json":
        for message in _package_json_problems(document):
            yield Problem(path, message)


def _package_json_problems(document: Any) -> Iterator[str]:
    if not isinstance(document, dict):
        yield "package.json must be a JSON object"
        return
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        yield 'package.json needs a non-empty "name"'
    scripts = document.get("scripts")
    if not isinstance(scripts, dict) or not scripts:
        yield 'package.json needs a "scripts" object with at least one script'
    for key in _DEPENDENCY_KEYS:
        if key in document and not isinstance(document[key], dict):
            yield f'package.json "{key}" must be an object'


def _load_json(path: str, content: str) -> Any:
    if _JSONC_NAMES.search(path):
        content = _strip_jsonc(content)
    return json.loads(content)


_JSONC_STOP = re.compile(r'["/,\]}]')
_JSON_STRING_STOP = re.compile(r'["\\]')


def _strip_jsonc(content: str) -> str:
    """JSON with comments and trailing commas (tsconfig) as plain JSON, lines kept in place.

    One pass, left to right, each character looked at once: a string or a comment is taken
    whole (an unterminated one runs to the end), a comma is dropped when the next thing
    after it (past blanks and comments) closes an object or an array."""
    out: list[str] = []
    comma: int | None = None  # where in ``out`` a comma waits for what follows it
    pos, end = 0, len(content)
    while (found := _JSONC_STOP.search(content, pos)) is not None:
        start = found.start()
        gap = content[pos:start]
        if gap and not gap.isspace():
            comma = None
        out.append(gap)
        char, pos = content[start], start + 1
        if char == '"':
            pos = _string_end(content, pos, _JSON_STRING_STOP)
            out.append(content[start:pos])
            comma = None
        elif content.startswith("//", start):
            newline = content.find("\n", start)
            pos = end if newline < 0 else newline
        elif content.startswith("/*", start):
            close = content.find("*/", start + 2)
            pos = end if close < 0 else close + 2
            out.append("\n" * content.count("\n", start, pos))
        elif char == ",":
            comma = len(out)
            out.append(char)
        else:
            if char in "}]" and comma is not None:
                out[comma] = ""
            comma = None
            out.append(char)
    out.append(content[pos:])
    return "".join(out)


def _string_end(content: str, pos: int, stops: re.Pattern[str]) -> int:
    """Just past the quote that closes the string whose text starts at ``pos``; ``stops``
    finds that quote, a backslash, and whatever else ends the string (a newline for
    single-line strings, which then ends before it). Unterminated: the end of the text."""
    while (found := stops.search(content, pos)) is not None:
        if content[found.start()] == "\\":
            pos = found.start() + 2
            continue
        return found.end() if content[found.start()] != "\n" else found.start()
    return len(content)


def _line_of(content: str, offset: int) -> int:
    return content.count("\n", 0, offset) + 1
