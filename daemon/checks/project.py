"""The checks over a job's files: ``check_files`` for what one phase just wrote, against
every file of the job, and ``check_project`` for the cross-file part (imports and declared
dependencies) at the end. ``_Project`` holds the indexes both languages' import checks share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property

from daemon.checks.content import _content_problems
from daemon.checks.problem import DEFAULT_MAX_FILE_BYTES, Problem, _parent
from daemon.checks.python import _parse_module, _PyModule, _PythonImports
from daemon.checks.scripts import SCRIPT_SUFFIXES, _ScriptImports


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
        return Problem(path, message, kind="skipped")

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
        elif path.endswith(SCRIPT_SUFFIXES):
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
