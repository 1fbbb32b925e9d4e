"""Conformance of one phase's answer to the file plan, checked before the phase commits.

The plan gives each phase its files and each file the names it exports; phases that run
side by side import each other's files by those paths and names, so a phase that writes
another path or another name breaks a file it never saw. Three rules: every planned file is
written and every planned export is defined with its planned name (``plan`` problems, which
the phase is asked to fix), and no file outside the phase's planned set is written
(``unplanned``: the phase is told, but an answer cannot take a file back).

Total like every reader of model text: a file that does not parse has no known exports
(its syntax error is reported by the content checks), and a module that may define any
name (``import *``, ``__getattr__``, ``export *`` from a package) satisfies every export.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

from daemon.checks import Problem
from daemon.checks.python import _bound_names
from daemon.verify.scripts import is_script, parse_script

# What a plan entry needs here: (path, purpose, ((export name, signature), ...)).
PlanEntry = tuple[str, str, tuple[tuple[str, str], ...]]
MAX_LISTED = 30  # planned paths named in one problem


def plan_problems(
    phase: str,
    planned: Sequence[PlanEntry],
    written: Mapping[str, str],
    readable: Mapping[str, str] | None = None,
) -> list[Problem]:
    """The ways the files a phase wrote (``written``) depart from its planned files; the
    exports of only the ``readable`` ones (by default all) are read (files over the size
    cap are not parsed)."""
    readable = written if readable is None else readable
    if not planned:
        return []
    problems: list[Problem] = []
    paths = {path for path, _, _ in planned}
    for path, purpose, exports in planned:
        content = written.get(path)
        if content is None:
            problems.append(
                Problem(
                    path,
                    f"the file plan gives this file to {phase} ({purpose}), but it was not "
                    "written: write it",
                    "plan",
                )
            )
            continue
        defined = defined_names(path, content) if path in readable else None
        if defined is None:
            continue
        for name, signature in exports:
            if name not in defined:
                problems.append(
                    Problem(
                        path,
                        f"does not define {name!r}, which the file plan gives it "
                        f"({signature}); other files import it by that name",
                        "plan",
                    )
                )
    extra = sorted(set(written) - paths)
    if extra:
        listed = ", ".join(sorted(paths)[:MAX_LISTED])
        for path in extra:
            problems.append(
                Problem(
                    path,
                    f"is not one of {phase}'s planned files ({listed}); write the planned "
                    "files, at their planned paths",
                    "unplanned",
                )
            )
    return problems


def defined_names(path: str, content: str) -> frozenset[str] | None:
    """The names a file offers to its importers; None when it may offer any, or when the
    file is of a kind that exports nothing by name (stylesheets, JSON, HTML)."""
    if path.endswith(".py"):
        try:
            tree = ast.parse(content)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return frozenset()
        return _bound_names(tree)
    if is_script(path):
        module = parse_script(path, content)
        if module.opaque or module.has_star:
            return None
        return module.exports | {r.name for r in module.reexports}
    return None
