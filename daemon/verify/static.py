"""The static tier of project verification: everything that needs no toolchain.

The content checks of ``daemon.checks`` (syntax, JSON, placeholders), its project checks
(imports resolve, packages declared), the cross-file checks (imported names exist) and
routes against calls, as one de-duplicated list: where both tiers report an import on the
same line, the cross-file problem is kept (it names the file and carries ``refs``).
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.checks import DEFAULT_MAX_FILE_BYTES, Problem
from daemon.checks.content import _content_problems
from daemon.checks.project import _Project
from daemon.verify.fastapi_routes import backend_routes
from daemon.verify.http_calls import http_calls
from daemon.verify.resolve import ProjectResolver
from daemon.verify.routes import match_calls

_CROSS_KINDS = frozenset({"import", "name"})


def static_problems(
    files: Mapping[str, str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[Problem]:
    """Every problem the static tier finds in a whole project, each once."""
    project = _Project(dict(files), max_file_bytes)
    old: list[Problem] = []
    for path in sorted(project.files):
        if path in project.oversized:
            old.append(project.skipped(path))
            continue
        old.extend(_content_problems(path, project.files[path], project))
        old.extend(project.import_problems(path))
    cross = [p for link in ProjectResolver(files, project).links() if (p := link.problem())]
    routes = match_calls(http_calls(files, project), backend_routes(files, project))
    return _unique([*_without_repeats(old, cross), *cross, *routes])


def _line_key(problem: Problem) -> tuple[str, str]:
    return problem.path, problem.message.split(":", 1)[0]


def _without_repeats(old: list[Problem], cross: list[Problem]) -> list[Problem]:
    """The older checks' problems, less the imports a cross-file problem reports too."""
    covered = {_line_key(p) for p in cross}
    return [p for p in old if p.kind not in _CROSS_KINDS or _line_key(p) not in covered]


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
