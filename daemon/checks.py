"""A quality gate over generated files: syntax, JSON, placeholders, and whether imports resolve.

Pure (the standard library only, no network) and linear in the size of the files, so it can
run after every phase. ``check_files`` looks at what one phase just wrote, against every file
of the job; ``check_project`` repeats the cross-file part (imports and declared dependencies)
at the end. Every parser here reads text a model chose: each is total (a file it cannot read
is a problem of that file, never an exception) and files over a size cap are not parsed.
The daemon runs them through ``run_checks``: in a worker process, within a time budget.

Each problem says whether the phase that wrote the file can fix it alone (``fixable_now``): a
syntax error, a placeholder, or an import of a missing sibling can be; an import of a file in
another directory, or of an undeclared package, may be satisfied by a later phase.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import fnmatch
import functools
import json
import os
import pickle
import posixpath
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
MAX_AMBIENT_PATTERNS = 64  # wildcard ``declare module`` patterns tried per import
MAX_ALIASES = 64  # path aliases (vite, tsconfig) tried per import


@dataclass(frozen=True)
class Problem:
    """One finding about one file; ``message`` is one line, led by the line number if known."""

    path: str
    message: str
    fixable_now: bool
    # content (syntax, JSON, placeholders), import (no such file), name (the file lacks the
    # name), route (no backend route for a call), dependency, or skipped (not checked)
    kind: str = "content"
    refs: tuple[str, ...] = ()  # the project files the problem is about, to show a repair

    @property
    def text(self) -> str:
        """The problem as one warning line."""
        return f"{self.path}: {self.message}" if self.path else self.message


def check_files(
    new: Mapping[str, str],
    existing: Mapping[str, str],
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> list[Problem]:
    """Check the files a phase just produced against every file of the job.

    ``existing`` may or may not already hold ``new``'s paths; ``new`` wins where both do.
    A file over ``max_file_bytes`` is not parsed; a ``skipped`` problem says so."""
    project = _Project({**existing, **new}, max_file_bytes)
    problems: list[Problem] = []
    for path in sorted(new):
        if path in project.oversized:
            problems.append(project.skipped(path))
            continue
        problems.extend(_content_problems(path, new[path], project))
        problems.extend(project.import_problems(path))
    return problems


def check_project(
    files: Mapping[str, str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[Problem]:
    """The whole job at its end: cross-file checks only (imports, dependencies) over all files."""
    project = _Project(dict(files), max_file_bytes)
    return [
        problem
        for path in sorted(files)
        for problem in (
            [project.skipped(path)] if path in project.oversized else project.import_problems(path)
        )
    ]


# --- one file on its own -------------------------------------------------------------------

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


def _content_problems(path: str, content: str, project: _Project) -> Iterator[Problem]:
    name = posixpath.basename(path)
    if not content.strip():
        if name not in _MAY_BE_EMPTY:
            yield Problem(path, "the file is empty", True)
        return
    if found := _placeholder(content):
        yield Problem(path, found, True)
    if path.endswith(".py"):
        if (error := project.python_module(path).error) is not None:
            yield Problem(path, error, True)
    elif path.endswith((".json", ".jsonc")):
        yield from _json_problems(path, content)
    elif path.endswith(".toml"):
        try:
            tomllib.loads(content)
        except tomllib.TOMLDecodeError as exc:
            yield Problem(path, f"invalid TOML: {exc}", True)
        except RecursionError:
            yield Problem(path, "invalid TOML: nested too deeply", True)


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
        yield Problem(
            path, f"line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})", True
        )
        return
    except RecursionError:
        yield Problem(path, "invalid JSON: nested too deeply", True)
        return
    if posixpath.basename(path) == "package.json":
        for message in _package_json_problems(document):
            yield Problem(path, message, True)


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


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def _target_dir_problem(importer: str, target: str, message: str) -> Problem:
    """An unresolved import is the writing phase's to fix when the missing file is a sibling."""
    return Problem(importer, message, _parent(target) == _parent(importer), kind="import")


# --- the job as a whole --------------------------------------------------------------------


class _Project:
    """Indexes over all files of a job, built lazily and shared by both languages' checks."""

    def __init__(self, files: dict[str, str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.files = files
        self.max_file_bytes = max_file_bytes
        self.oversized = frozenset(p for p, c in files.items() if _size_over(c, max_file_bytes))
        self._modules: dict[str, _PyModule] = {}
        self.python = _PythonImports(self)
        self.scripts = _ScriptImports(self)

    def readable(self) -> Iterator[tuple[str, str]]:
        """The files small enough to parse, with their contents."""
        return ((p, c) for p, c in self.files.items() if p not in self.oversized)

    def skipped(self, path: str) -> Problem:
        size = len(self.files[path].encode("utf-8", "replace"))
        message = (
            f"not checked: {size} bytes, over jobs.check_max_file_bytes = {self.max_file_bytes}"
        )
        return Problem(path, message, False, kind="skipped")

    @cached_property
    def python_dirs(self) -> frozenset[str]:
        """Directories holding a .py file at any depth (namespace packages count as modules)."""
        return frozenset(_ancestors(path for path in self.files if path.endswith(".py")))

    def python_module(self, path: str) -> _PyModule:
        if path not in self._modules:
            if path in self.oversized:  # not read: it may import and define anything
                self._modules[path] = _PyModule(None)
            else:
                self._modules[path] = _parse_module(path, self.files[path])
        return self._modules[path]

    def import_problems(self, path: str) -> Iterator[Problem]:
        if path.endswith(".py"):
            yield from self.python.problems(path)
        elif path.endswith(_SCRIPT_SUFFIXES):
            yield from self.scripts.problems(path)


def _size_over(content: str, max_bytes: int) -> bool:
    if len(content) * 4 <= max_bytes:  # UTF-8 takes at most 4 bytes a character
        return False
    return len(content) > max_bytes or len(content.encode("utf-8", "replace")) > max_bytes


def _ancestors(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        directory = _parent(path)
        while directory and directory not in found:
            found.add(directory)
            directory = _parent(directory)
    return found


# --- Python --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PyModule:
    """What the checks need of a Python file; the tree itself is dropped at once, since keeping
    every tree of a job alive makes the garbage collector's full passes far more frequent."""

    error: str | None
    imports: tuple[_PyImport, ...] = ()
    defined: frozenset[str] | None = None  # top-level names; None when any may exist

    @classmethod
    def parse(cls, path: str, content: str) -> _PyModule:
        with warnings.catch_warnings():
            # invalid escape sequences in generated code warn; they are not this gate's concern
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(content, filename=path)
            except SyntaxError as exc:
                return cls(f"line {exc.lineno or 1}: {exc.msg}")
            except (ValueError, RecursionError, MemoryError) as exc:  # NUL, absurd nesting
                return cls(f"line 1: {exc or 'too deeply nested to parse'}")
        return cls(None, tuple(_python_imports(tree.body)), _bound_names(tree))


# A job's files are checked again after each of its phases: parse each version once.
_parse_module = functools.lru_cache(maxsize=2048)(_PyModule.parse)


@dataclass(frozen=True)
class _PyImport:
    line: int
    level: int
    module: str
    names: tuple[str, ...]
    optional: bool

    @property
    def label(self) -> str:
        return "." * self.level + self.module


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _python_imports(statements: Iterable[ast.AST], optional: bool = False) -> Iterator[_PyImport]:
    """Every import statement at any depth; those guarded by ``except ImportError`` are optional."""
    for node in statements:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _PyImport(node.lineno, 0, alias.name, (), optional)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            yield _PyImport(node.lineno, node.level, node.module or "", names, optional)
        else:
            guarded = isinstance(node, ast.Try | ast.TryStar) and _catches_import_error(node)
            for field in _BLOCKS:
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _python_imports(block, optional or (guarded and field == "body"))


def _catches_import_error(node: ast.Try | ast.TryStar) -> bool:
    caught = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(
            kind is None or (isinstance(kind, ast.Name) and kind.id in caught) for kind in kinds
        ):
            return True
    return False


def _bound_names(tree: ast.Module) -> frozenset[str] | None:
    """The names a module defines at top level; None when it may define any (``import *``)."""
    names: set[str] = set()
    statements: list[ast.AST] = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            names.update(_dunder_all(node))
            continue
        elif isinstance(node, ast.For | ast.AsyncFor | ast.With | ast.AsyncWith):
            targets = (
                [node.target]
                if isinstance(node, ast.For | ast.AsyncFor)
                else [item.optional_vars for item in node.items if item.optional_vars]
            )
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for field in _BLOCKS:
            statements.extend(getattr(node, field, None) or ())
    return frozenset(names)


def _dunder_all(node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> Iterator[str]:
    """The names ``__all__`` lists: a module promises them, whatever binds them."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if node.value is None or not any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in targets
    ):
        return
    if isinstance(node.value, ast.List | ast.Tuple):
        for item in node.value.elts:
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                yield item.value


@dataclass(frozen=True)
class _Miss:
    """Why an import does not resolve under one base directory, and the file it would need."""

    message: str
    target: str


class _PythonImports:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files
        self._roots_of_dir: dict[str, list[str]] = {}

    def problems(self, path: str) -> Iterator[Problem]:
        for item in self.project.python_module(path).imports:
            if item.optional:
                continue
            problem = self._relative(path, item) if item.level else self._absolute(path, item)
            if problem is not None:
                yield problem

    def _relative(self, path: str, item: _PyImport) -> Problem | None:
        base = _parent(path)
        for _ in range(item.level - 1):
            if not base:
                return Problem(
                    path,
                    f"line {item.line}: import '{item.label}' goes above the project",
                    False,
                    kind="import",
                )
            base = _parent(base)
        miss = self._resolve(base, item)
        if miss is None:
            return None
        return _target_dir_problem(path, miss.target, f"line {item.line}: {miss.message}")

    def _absolute(self, path: str, item: _PyImport) -> Problem | None:
        top = item.module.split(".")[0]
        first_miss = None
        for root in self._roots_for(path):
            if self._has_top(root, top):
                miss = self._resolve(root, item)
                if miss is None:
                    return None
                first_miss = first_miss or miss
        if top in sys.stdlib_module_names or self._declared(top):
            return None
        if first_miss is not None:
            return _target_dir_problem(
                path, first_miss.target, f"line {item.line}: {first_miss.message}"
            )
        if self.requirements is None:
            return None
        return Problem(
            path, f"line {item.line}: {self._undeclared(path, top)}", False, kind="dependency"
        )

    def _resolve(self, base: str, item: _PyImport) -> _Miss | None:
        module_path = _join(base, *item.module.split(".")) if item.module else base
        kind = self._kind(module_path)
        if kind is None:
            target = module_path + ".py"
            return _Miss(
                f"import '{item.label}' does not resolve (no {target} or {module_path}/__init__.py)",
                target,
            )
        if kind == "module":
            return None
        for name in item.names:
            if miss := self._name_miss(module_path, kind, item, name):
                return miss
        return None

    def _name_miss(self, package: str, kind: str, item: _PyImport, name: str) -> _Miss | None:
        if name == "*" or self._kind(_join(package, name)) is not None:
            return None
        init = _join(package, "__init__.py")
        if kind == "package":
            defined = self.project.python_module(init).defined
            if defined is None or name in defined or name.startswith("__"):
                return None
            message = f"cannot import '{name}' from '{item.label}': no module {package}/{name}.py"
            return _Miss(f"{message} and {init} does not define it", init)
        target = _join(package, name + ".py")
        return _Miss(f"cannot import '{name}' from '{item.label}': no module {target}", target)

    def _kind(self, module_path: str) -> str | None:
        if module_path + ".py" in self.files:
            return "module"
        if _join(module_path, "__init__.py") in self.files:
            return "package"
        if module_path in self.project.python_dirs or not module_path:
            return "namespace"
        return None

    def _has_top(self, root: str, top: str) -> bool:
        kind = self._kind(_join(root, top))
        if kind == "namespace":
            # a directory without __init__.py loses to an installed package of the same name
            return top not in _PROVIDERS and not self._declared(top)
        return kind is not None

    def _roots_for(self, path: str) -> list[str]:
        """Source roots, those above the file first (deepest first), then the others."""
        directory = _parent(path)
        if directory not in self._roots_of_dir:  # the same for every file of a directory
            above = [r for r in self.roots if _in_scope(directory, r) or r == directory]
            above.sort(key=len, reverse=True)
            others = sorted(r for r in self.roots if r not in above)
            self._roots_of_dir[directory] = above + others
        return self._roots_of_dir[directory]

    @cached_property
    def roots(self) -> frozenset[str]:
        """Directories that hold top-level modules: the parent of each outermost package, the
        directory of each script, and the parent of an ``app/main.py``-style directory."""
        roots: set[str] = set()
        for path in self.files:
            if not path.endswith(".py"):
                continue
            directory = _parent(path)
            while directory and _join(directory, "__init__.py") in self.files:
                directory = _parent(directory)
            roots.add(directory)
            if posixpath.basename(path) == "main.py" and directory == _parent(path) and directory:
                roots.add(_parent(directory))
        return frozenset(roots)

    @cached_property
    def requirements(self) -> dict[str, frozenset[str]] | None:
        """Declared distributions per requirements file, or None when the job has none yet."""
        found = {p: _requirements(p, c) for p, c in self.project.readable() if _is_requirements(p)}
        return {p: names for p, names in found.items() if names is not None} or None

    @cached_property
    def _declared_names(self) -> frozenset[str]:
        return frozenset().union(*(self.requirements or {}).values())

    def _declared(self, top: str) -> bool:
        return any(dist in self._declared_names for dist in _providers(top))

    def _undeclared(self, path: str, top: str) -> str:
        assert self.requirements is not None
        nearest = [p for p in self.requirements if _in_scope(path, _parent(p))]
        where = max(nearest, key=len) if nearest else min(self.requirements)
        return (
            f"module '{top}' is neither part of the project nor declared in {where} "
            f"(add {_providers(top)[0]})"
        )


def _is_requirements(path: str) -> bool:
    name = posixpath.basename(path)
    if name == "pyproject.toml":
        return True
    return name.endswith(".txt") and (
        name.startswith("requirements") or posixpath.basename(_parent(path)) == "requirements"
    )


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _requirements(path: str, content: str) -> frozenset[str] | None:
    if path.endswith(".toml"):
        return _pyproject_requirements(content)
    lines = (line.split(" #")[0].strip() for line in content.splitlines())
    return _distributions(line for line in lines if line and not line.startswith(("#", "-")))


def _pyproject_requirements(content: str) -> frozenset[str] | None:
    """PEP 621 and Poetry dependency tables; None when the file declares no project."""
    try:
        document = tomllib.loads(content)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    project = _table(document, "project")
    poetry = _table(_table(document, "tool"), "poetry")
    if not project and not poetry:
        return None
    lists = [project.get("dependencies"), *_table(project, "optional-dependencies").values()]
    lists.extend(_table(document, "dependency-groups").values())
    tables = [_table(poetry, "dependencies"), _table(poetry, "dev-dependencies")]
    tables.extend(_table(group, "dependencies") for group in _table(poetry, "group").values())
    specs = [spec for specs in lists if isinstance(specs, list) for spec in specs]
    specs.extend(name for table in tables for name in table)
    return _distributions(spec for spec in specs if isinstance(spec, str))


def _table(document: Any, key: str) -> dict[str, Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def _distributions(specs: Iterable[str]) -> frozenset[str]:
    """Normalised names, each also with its extras (``uvicorn[standard]``)."""
    names: set[str] = set()
    for spec in specs:
        if match := _REQUIREMENT.match(spec):
            name = _normalise(match[1])
            names.add(name)
            for extra in (match[2] or "").split(","):
                if extra.strip():
                    names.add(f"{name}[{_normalise(extra.strip())}]")
    return frozenset(names)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _providers(module: str) -> tuple[str, ...]:
    """Distributions that install a top-level module: known ones first, then the usual names."""
    own = _normalise(module)
    return (*_PROVIDERS.get(module, ()), own, f"python-{own}", f"py{own}", f"{own}-python")


_STANDARD = ("fastapi[standard]", "fastapi[all]")
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "jose": ("python-jose",),
    "jwt": ("pyjwt",),
    "dotenv": ("python-dotenv", "pydantic-settings", "uvicorn[standard]"),
    "multipart": ("python-multipart", *_STANDARD),
    "python_multipart": ("python-multipart", *_STANDARD),
    "yaml": ("pyyaml", "uvicorn[standard]"),
    "psycopg2": ("psycopg2-binary", "psycopg2"),
    "sqlalchemy": ("sqlalchemy", "sqlmodel", "alembic", "flask-sqlalchemy"),
    "pydantic_settings": ("pydantic-settings",),
    "email_validator": ("email-validator", "pydantic[email]", *_STANDARD),
    "passlib": ("passlib",),
    "bcrypt": ("bcrypt", "passlib[bcrypt]"),
    "argon2": ("argon2-cffi", "passlib[argon2]"),
    "uvicorn": ("uvicorn", *_STANDARD),
    "fastapi": ("fastapi",),
    "starlette": ("starlette", "fastapi", "sse-starlette"),
    "pydantic": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "pydantic_core": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "typing_extensions": ("typing-extensions", "pydantic", "fastapi", "sqlalchemy"),
    "anyio": ("anyio", "starlette", "fastapi", "httpx"),
    "httpx": ("httpx", *_STANDARD),
    "jinja2": ("jinja2", "flask", *_STANDARD),
    "markupsafe": ("markupsafe", "jinja2", "flask"),
    "werkzeug": ("werkzeug", "flask"),
    "click": ("click", "uvicorn", "flask", "celery", "typer"),
    "h11": ("h11", "uvicorn", "httpx"),
    "websockets": ("websockets", "uvicorn[standard]"),
    "alembic": ("alembic",),
    "mako": ("mako", "alembic"),
    "greenlet": ("greenlet", "sqlalchemy"),
    "pytest": ("pytest",),
    "_pytest": ("pytest",),
    "slowapi": ("slowapi",),
    "limits": ("limits", "slowapi"),
    "redis": ("redis",),
    "celery": ("celery",),
    "kombu": ("kombu", "celery"),
    "dateutil": ("python-dateutil",),
    "PIL": ("pillow",),
    "cryptography": ("cryptography", "python-jose[cryptography]", "pyjwt[crypto]"),
    "Crypto": ("pycryptodome",),
    "bs4": ("beautifulsoup4",),
    "sklearn": ("scikit-learn",),
    "cv2": ("opencv-python", "opencv-python-headless"),
    "magic": ("python-magic",),
    "socketio": ("python-socketio",),
    "MySQLdb": ("mysqlclient",),
    "attr": ("attrs",),
    "dns": ("dnspython", "email-validator"),
    "certifi": ("certifi", "requests", "httpx"),
    "pkg_resources": ("setuptools",),
}


# --- TypeScript and JavaScript -------------------------------------------------------------

_SCRIPT_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_RESOLVE_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".d.ts", ".json", ".css", ".mjs", ".cjs")
_DEPENDENCY_KEYS = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")

# Left to right, a comment or a string is consumed whole, so an import written inside one
# (an example in a docstring, a code sample in a template literal) is never taken for code.
# Static imports and exports are statements, so they start a line or follow a ";"; that keeps
# prose in JSX text ("import your data from 'CSV'") out. A hand-written scanner, not one big
# regex: each character is looked at a bounded number of times, so a hostile file costs time
# in proportion to its length (an unterminated comment or template literal runs to the end,
# an unterminated quoted string to the end of its line).
_SCRIPT_STOP = re.compile(r"""[/'"`]|(?<![\w$.])(?:import|export|require)(?![\w$])""")
_STRING_STOPS = {
    "'": re.compile(r"['\\\n]"),
    '"': re.compile(r'["\\\n]'),
    "`": re.compile(r"[`\\]"),
}
_CLAUSE = re.compile(r"[\w$*{},\s]*")  # what may stand between `import` and `from`
_QUOTED_SPEC = re.compile(r"""\s*(['"])([^'"\n]+)\1""")
_CALL_SPEC = re.compile(r"""\s*\(\s*(['"`])([^'"`\n$]+)\1\s*\)""")
_AMBIENT = re.compile(r"""\bdeclare\s+module\s+['"]([^'"]+)['"]""")
_VITE_ALIAS = re.compile(r"""(?:['"]@['"]|\bfind\s*:\s*['"]@['"])\s*[:,]""")
_QUOTED_DIR = re.compile(r"""['"](?:\./|/)?(\w[\w.-]*(?:/[\w.-]+)*)/?['"]""")
_NODE_BUILTIN_NAMES = (
    "assert async_hooks buffer child_process cluster console constants crypto dgram "
    "diagnostics_channel dns domain events fs http http2 https inspector module net os path "
    "perf_hooks process punycode querystring readline repl stream string_decoder sys test "
    "timers tls trace_events tty url util v8 vm wasi worker_threads zlib"
)
_NODE_BUILTINS = frozenset(_NODE_BUILTIN_NAMES.split())


def _script_imports(content: str) -> Iterator[tuple[int, str]]:
    lines = _Lines(content)
    for offset, spec in _ScriptScanner(content).specs():
        yield lines.at(offset), spec


class _Lines:
    """Line numbers of increasing offsets into one text, counted on from the last one."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._offset, self._line = 0, 1

    def at(self, offset: int) -> int:
        if offset < self._offset:
            self._offset, self._line = 0, 1
        self._line += self._text.count("\n", self._offset, offset)
        self._offset = offset
        return self._line


class _ScriptScanner:
    """The module specifiers of a script's imports, exports and require/import() calls."""

    def __init__(self, text: str) -> None:
        self.text = text
        # The run of clause characters last measured: (from, end, end of its last word).
        # Every keyword inside one run shares its end, so each run is measured once.
        self._run = (-1, -1, -1)

    def specs(self) -> Iterator[tuple[int, str]]:
        text, pos = self.text, 0
        while (found := _SCRIPT_STOP.search(text, pos)) is not None:
            start, pos = found.start(), found.end()
            char = text[start]
            if char == "/":
                pos = self._comment_end(start)
            elif char in _STRING_STOPS:
                pos = _string_end(text, pos, _STRING_STOPS[char])
            elif (hit := self._import(found[0], start, pos)) is not None:
                offset, spec, pos = hit
                yield offset, spec

    def _comment_end(self, start: int) -> int:
        text = self.text
        if text.startswith("//", start):
            end = text.find("\n", start)
        elif text.startswith("/*", start):
            end = text.find("*/", start + 2)
            end = end + 2 if end >= 0 else end
        else:
            return start + 1
        return end if end >= 0 else len(text)

    def _import(self, keyword: str, start: int, end: int) -> tuple[int, str, int] | None:
        """(offset of the specifier, the specifier, where scanning goes on), if any."""
        found = None
        if keyword != "require" and self._statement_start(start):
            found = self._static_from(end)
            if found is None and keyword == "import":
                found = _QUOTED_SPEC.match(self.text, end)
        if found is None and keyword != "export":
            found = _CALL_SPEC.match(self.text, end)
        return None if found is None else (found.start(2), found[2], found.end())

    def _statement_start(self, start: int) -> bool:
        text, pos = self.text, start
        while pos and text[pos - 1] in " \t":
            pos -= 1
        return not pos or text[pos - 1] in "\n;"

    def _static_from(self, end: int) -> re.Match[str] | None:
        """``import x from 'spec'`` / ``export {a} from "spec"``: the clause after the
        keyword is a run of clause characters ending in the word ``from``."""
        text = self.text
        start, run_end, word_end = self._run
        if not start <= end <= run_end:
            run_end = _CLAUSE.match(text, end).end()  # type: ignore[union-attr]
            word_end = run_end
            while word_end > end and text[word_end - 1].isspace():
                word_end -= 1
            self._run = (end, run_end, word_end)
        from_at = word_end - 4
        if from_at <= end or text[from_at:word_end] != "from" or _is_word(text[from_at - 1]):
            return None
        return _QUOTED_SPEC.match(text, run_end)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


@dataclass(frozen=True)
class _Alias:
    scope: str
    prefix: str
    target: str


class _ScriptImports:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files

    def problems(self, path: str) -> Iterator[Problem]:
        if path in self.project.oversized:
            return
        for line, spec in _script_imports(self.files[path]):
            spec = re.split(r"[?#]", spec, maxsplit=1)[0]
            if problem := self._check(path, spec, f"line {line}: "):
                yield problem

    def _check(self, path: str, spec: str, where: str) -> Problem | None:
        if spec.startswith((".", "/")):
            base = self._package_dir(path) if spec.startswith("/") else _parent(path)
            return self._relative(path, base, spec, where)
        aliased = [
            a for a in self.aliases if _in_scope(path, a.scope) and spec.startswith(a.prefix)
        ]
        for alias in aliased:
            if self._find(_normal(_join(alias.target, spec[len(alias.prefix) :]))):
                return None
        if named := [alias for alias in aliased if alias.prefix]:
            rest = spec[len(named[0].prefix) :]
            return self._relative(path, named[0].target, "./" + rest, where, spec)
        if spec.startswith(("@/", "~/")):
            message = f"import '{spec}' uses the '{spec[:2]}' alias, which no vite.config or tsconfig declares"
            return Problem(path, where + message, False, kind="import")
        return self._package(path, spec, where)

    def _relative(
        self, path: str, base: str, spec: str, where: str, label: str = ""
    ) -> Problem | None:
        label = label or spec
        target = _normal(_join(base, spec.lstrip("/")))
        if target == ".." or target.startswith("../"):
            return Problem(
                path, f"{where}import '{label}' goes above the project", False, kind="import"
            )
        if self._find(target):
            return None
        if spec.startswith("/") and self._find(_normal(_join(base, "public", spec.lstrip("/")))):
            return None  # Vite serves public/ at the root
        message = f"import '{label}' does not resolve (no {target}.* or {target}/index.*)"
        return _target_dir_problem(path, target + ".ts", where + message)

    def _find(self, target: str) -> bool:
        files = self.files
        if target in files:
            return True
        stem, suffix = posixpath.splitext(target)
        if suffix in (".js", ".jsx", ".mjs", ".cjs") and any(
            stem + ts in files for ts in (".ts", ".tsx", ".mts", ".cts")
        ):
            return True  # TypeScript resolves ./x.js to ./x.ts
        index = _join(target, "index")
        return any(target + s in files or index + s in files for s in _RESOLVE_SUFFIXES)

    def _package(self, path: str, spec: str, where: str) -> Problem | None:
        if ":" in spec or spec.startswith("#"):
            return None  # node:fs, virtual: modules, URLs, package.json "imports"
        parts = spec.split("/")
        name = "/".join(parts[:2]) if spec.startswith("@") else parts[0]
        if name in _NODE_BUILTINS or self._ambient(spec):
            return None
        manifest = self._manifest_for(path)
        if manifest is None:
            return None
        manifest_path, declared = manifest
        types_name = "@types/" + name.lstrip("@").replace("/", "__")
        if name in declared or types_name in declared:
            return None
        return Problem(
            path,
            f"{where}package '{name}' is not declared in {manifest_path}",
            False,
            kind="dependency",
        )

    def _ambient(self, spec: str) -> bool:
        names, patterns = self.ambient_modules
        return spec in names or any(pattern.match(spec) for pattern in patterns)

    def _manifest_for(self, path: str) -> tuple[str, frozenset[str]] | None:
        directory = _parent(path)
        while True:
            candidate = _join(directory, "package.json")
            if candidate in self.files:
                declared = self.manifests.get(candidate)
                return None if declared is None else (candidate, declared)
            if not directory:
                return None
            directory = _parent(directory)

    def _package_dir(self, path: str) -> str:
        found = self._manifest_for(path)
        return _parent(found[0]) if found else _parent(path)

    @cached_property
    def manifests(self) -> dict[str, frozenset[str]]:
        """Declared packages of each package.json that parses, plus its own name."""
        found: dict[str, frozenset[str]] = {}
        for path, content in self.project.readable():
            if posixpath.basename(path) != "package.json":
                continue
            try:
                document = json.loads(content)
            except (ValueError, RecursionError):
                continue
            if isinstance(document, dict):
                tables = [document.get(key) for key in _DEPENDENCY_KEYS]
                names = {name for table in tables if isinstance(table, dict) for name in table}
                found[path] = frozenset({*names, str(document.get("name", ""))})
        return found

    @cached_property
    def ambient_modules(self) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
        """Modules that ``declare module`` makes known: exact names, and (a bounded number of)
        wildcard patterns such as ``*.svg``."""
        names = {
            name
            for path, content in self.project.readable()
            if path.endswith(".ts")
            for name in _AMBIENT.findall(content)
        }
        patterns = sorted(name for name in names if any(c in name for c in "*?["))
        compiled = tuple(re.compile(fnmatch.translate(p)) for p in patterns[:MAX_AMBIENT_PATTERNS])
        return frozenset(names), compiled

    @cached_property
    def aliases(self) -> list[_Alias]:
        aliases: list[_Alias] = []
        for path, content in self.project.readable():
            name = posixpath.basename(path)
            if re.fullmatch(r"vite\.config\.[mc]?[jt]s", name):
                aliases.extend(_vite_aliases(path, content))
            elif re.fullmatch(r"[tj]sconfig[^/]*\.json", name):
                aliases.extend(_tsconfig_aliases(path, content))
        return aliases[:MAX_ALIASES]


def _normal(path: str) -> str:
    normal = posixpath.normpath(path) if path else ""
    return "" if normal == "." else normal


def _in_scope(path: str, scope: str) -> bool:
    return not scope or path.startswith(scope + "/")


def _vite_aliases(path: str, content: str) -> Iterator[_Alias]:
    scope = _parent(path)
    if found := _VITE_ALIAS.search(content):
        folder = _QUOTED_DIR.search(content, found.end(), found.end() + 160)
        target = folder[1] if folder and not folder[1].startswith("@") else "src"
        yield _Alias(scope, "@/", _join(scope, target))


def _tsconfig_aliases(path: str, content: str) -> Iterator[_Alias]:
    try:
        document = json.loads(_strip_jsonc(content))
    except (ValueError, RecursionError):
        return
    options = document.get("compilerOptions") if isinstance(document, dict) else None
    if not isinstance(options, dict):
        return
    scope = _parent(path)
    base_url = options.get("baseUrl")
    base = _normal(_join(scope, base_url)) if isinstance(base_url, str) else scope
    if isinstance(base_url, str):
        yield _Alias(scope, "", base)
    paths = options.get("paths")
    for pattern, targets in paths.items() if isinstance(paths, dict) else ():
        if pattern.endswith("/*") and isinstance(targets, list) and targets:
            target = _normal(_join(base, str(targets[0]).removesuffix("*")))
            yield _Alias(scope, pattern[:-1], target)


# --- off the event loop --------------------------------------------------------------------

CHECK_WORKERS = 2  # checks run at once (each in a process of its own)
WORKER_MEMORY_BYTES = 2 * 1024**3  # address space of a worker: a runaway parse fails there
_FRAME = struct.Struct("!Q")
_POLL_S = 0.1


class ChecksSkipped(Exception):  # noqa: N818 - a condition, reported as a warning
    """The code checks did not finish."""


@dataclass(frozen=True)
class CheckLimits:
    """``jobs.check_timeout_s`` and ``jobs.check_max_file_bytes``."""

    timeout_s: float = 10.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def _verify_static(files: Mapping[str, str], max_file_bytes: int) -> list[Problem]:
    from daemon.verify.static import static_problems  # imports tree-sitter: only when asked

    return static_problems(files, max_file_bytes)


def _check_plan(
    phase: str, planned: Any, written: Mapping[str, str], max_file_bytes: int
) -> list[Problem]:
    from daemon.verify.conformance import plan_problems

    small = {path: content for path, content in written.items() if len(content) <= max_file_bytes}
    return plan_problems(phase, planned, written, small)


_ENTRY_POINTS = {
    "check_files": check_files,
    "check_project": check_project,
    "verify_static": _verify_static,
    "check_plan": _check_plan,
}


async def run_checks(name: str, limits: CheckLimits, *args: Any) -> list[Problem]:
    """``check_files``, ``check_project``, ``verify_static`` or ``check_plan`` in a worker
    process, within ``limits.timeout_s``; each entry point gets ``limits.max_file_bytes`` last.

    Never raises for what the files hold: checks that time out, or whose worker dies, give
    one ``skipped`` problem saying so (the checks are advice; the phase goes on without)."""
    try:
        return await _pool().run(name, (*args, limits.max_file_bytes), limits.timeout_s)
    except ChecksSkipped as exc:
        return [Problem("", f"code checks skipped: {exc}", False, kind="skipped")]


class CheckPool:
    """Worker processes running the checks, each run within a time budget.

    The checks are linear in the size of the files, but they parse text a model chose, over
    a whole job, with the C parsers of the standard library. A worker process keeps that
    work off the event loop and its GIL, a crash in a C parser costs one run, and it is the
    one thing that truly stops a run past its budget: a thread cannot be stopped, a process
    is killed (and a fresh one started for the next run). Workers are started on demand and
    kept; they hold nothing of the environment but what Python needs (no API key) and exit
    when the daemon's end of their pipe closes, however the daemon ended."""

    def __init__(self, workers: int = CHECK_WORKERS) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="codegend-checks")

    async def run(self, name: str, args: tuple[Any, ...], timeout_s: float) -> list[Problem]:
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._threads, self._exchange, name, args, timeout_s, stop
            )
        except asyncio.CancelledError:
            stop.set()  # the thread kills its worker at once instead of waiting
            raise

    def _exchange(
        self, name: str, args: tuple[Any, ...], timeout_s: float, stop: threading.Event
    ) -> list[Problem]:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None and worker.process.poll() is not None:
            worker.kill()  # died while idle (the OOM killer, say): start another
            worker = None
        try:
            worker = worker or _Worker()
            problems = worker.call(name, args, timeout_s, stop)
        except BaseException:
            if worker is not None:
                worker.kill()
            raise
        with self._lock:
            self._idle.append(worker)
        return problems

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)


class _Worker:
    """One worker process: requests and answers are pickles, each led by its length."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        env["PYTHONPATH"] = package_root
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from daemon.checks import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # not the daemon's stderr: whoever reads it to its end must not wait for a
                # worker finishing a run after the daemon died
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            raise ChecksSkipped(f"no worker process ({exc})") from None

    def call(
        self, name: str, args: tuple[Any, ...], timeout_s: float, stop: threading.Event
    ) -> list[Problem]:
        deadline = time.monotonic() + timeout_s
        try:
            _write_frame(self._stdin, pickle.dumps((name, args), pickle.HIGHEST_PROTOCOL))
            status, value = pickle.loads(self._read_frame(deadline, timeout_s, stop))
        except OSError as exc:  # the worker died (its pipe broke)
            code = self.process.poll()
            reason = f"exit status {code}" if code is not None else str(exc)
            raise ChecksSkipped(f"the checks' worker process failed ({reason})") from None
        if status != "ok":
            raise ChecksSkipped(f"the checks failed ({value})")
        return list(value)

    @property
    def _stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    def _read_frame(self, deadline: float, timeout_s: float, stop: threading.Event) -> bytes:
        assert self.process.stdout is not None
        fd, data, need = self.process.stdout.fileno(), bytearray(), _FRAME.size
        while len(data) < need:
            if stop.is_set():
                raise ChecksSkipped("stopped")
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise ChecksSkipped(f"they took longer than jobs.check_timeout_s = {timeout_s:g} s")
            if select.select([fd], [], [], min(left_s, _POLL_S))[0]:
                chunk = os.read(fd, max(need - len(data), 65536))
                if not chunk:
                    raise OSError("end of output")
                data += chunk
            if need == _FRAME.size and len(data) >= need:
                need += _FRAME.unpack_from(data)[0]
        return bytes(data[_FRAME.size : need])

    def kill(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.process.kill()
        self.process.wait()


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve() -> None:
    """A worker's loop: run each request, answer it; end when the daemon's pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    sys.stdout = sys.stderr  # whatever else prints must not mix into the answers
    while (header := _read_exactly(requests, _FRAME.size)) is not None:
        payload = _read_exactly(requests, _FRAME.unpack(header)[0])
        if payload is None:
            return
        name, args = pickle.loads(payload)
        try:
            answer: tuple[str, Any] = ("ok", _ENTRY_POINTS[name](*args))
        except (Exception, RecursionError, MemoryError) as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}"[:500])
        try:
            _write_frame(answers, pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


_the_pool: CheckPool | None = None


def _pool() -> CheckPool:
    global _the_pool
    if _the_pool is None:
        _the_pool = CheckPool()
        atexit.register(_the_pool.close)
    return _the_pool
