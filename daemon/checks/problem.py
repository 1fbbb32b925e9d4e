"""What a check finds (``Problem``), and the arithmetic on project paths the checks share.

Project paths are POSIX and relative; ``""`` is the project's root.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

DEFAULT_MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Problem:
    """One finding about one file; ``message`` is one line, led by the line number if known."""

    path: str
    message: str
    # content (syntax, JSON, placeholders), import (no such file), name (the file lacks the
    # name), route (no backend route for a call), dependency, skipped (not checked), plan (a
    # planned file or export is missing) or unplanned (a file outside the phase's plan)
    kind: str = "content"
    refs: tuple[str, ...] = ()  # the project files the problem is about, to show a repair

    @property
    def text(self) -> str:
        """The problem as one warning line."""
        return f"{self.path}: {self.message}" if self.path else self.message


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def _normal(path: str) -> str:
    normal = posixpath.normpath(path) if path else ""
    return "" if normal == "." else normal


def _in_scope(path: str, scope: str) -> bool:
    return not scope or path.startswith(scope + "/")
