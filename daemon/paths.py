"""Path safety: every path the model returns is checked before it is stored or written."""

from __future__ import annotations

import os
import re
from pathlib import Path

from daemon.errors import UnsafePath

MAX_PATH_CHARS = 240
MAX_COMPONENT_CHARS = 100
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a project, else raise UnsafePath."""
    problem = _problem(path)
    if problem:
        raise UnsafePath(f"unsafe path {path!r}: {problem}")
    return path


def _problem(path: str) -> str | None:  # noqa: C901 - a flat list of independent rules
    if not path or not path.strip():
        return "empty"
    if len(path) > MAX_PATH_CHARS:
        return f"longer than {MAX_PATH_CHARS} characters"
    if "\x00" in path:
        return "contains NUL"
    if _CONTROL.search(path):
        return "contains control characters"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "absolute"
    if path.startswith("~"):
        return "starts with ~"
    if _DRIVE.match(path):
        return "has a drive letter"
    parts = path.split("/")
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    if ".." in parts:
        return "has a '..' component"
    if any(part.lower() == ".git" for part in parts):
        return "inside .git/"
    if any(len(part) > MAX_COMPONENT_CHARS for part in parts):
        return f"a component is longer than {MAX_COMPONENT_CHARS} characters"
    return None


def write_file(root: Path, path: str, content: str, checked: set[Path] | None = None) -> Path:
    """Write ``content`` under ``root`` without following symlinks anywhere below ``root``.

    ``checked`` remembers the directories already made and found not to be symlinks, so a
    caller writing many files into one tree checks each directory once."""
    check_path(path)
    seen = checked if checked is not None else set()
    target = root
    if root not in seen:
        root.mkdir(parents=True, exist_ok=True)
        seen.add(root)
    for part in path.split("/")[:-1]:
        target = target / part
        if target in seen:
            continue
        if target.is_symlink():
            raise UnsafePath(f"unsafe path {path!r}: {target} is a symlink")
        target.mkdir(exist_ok=True)
        seen.add(target)
    target = target / path.rsplit("/", 1)[-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode("utf-8"))
    return target
