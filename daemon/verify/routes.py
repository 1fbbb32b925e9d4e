"""Backend routes against frontend HTTP calls.

Routes come from FastAPI source (``daemon.verify.fastapi_routes``) or from an OpenAPI document
(``routes_from_openapi``); calls from the frontend's scripts (``daemon.verify.http_calls``,
whose docstring lists the call shapes it understands). ``match_calls`` reports each call
that no route answers. Paths compare segment by segment: a parameter (``{car_id}``, ``:id``,
``${x}``) matches any one segment, ``{p:path}`` one or more, and ``**`` (a prefix that is not
statically known) any number; a trailing slash and the query string do not count.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.checks import Problem

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
ANY = "**"  # a part of a path that is not statically known: any number of segments
MAX_SEGMENTS = 32  # segments of a path compared; longer paths are cut
MAX_CLOSEST = 3  # routes a problem names as the closest


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    file: str
    line: int


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    file: str
    line: int


# --- matching ------------------------------------------------------------------------------


def match_calls(calls: Sequence[HttpCall], routes: Sequence[Route]) -> list[Problem]:
    """A problem of the calling file for each call whose method and path match no route.
    No routes at all (no backend, or one not read): no problems."""
    if not routes:
        return []
    compiled = [(route, _segments(route.path)) for route in routes]
    problems = []
    for call in calls:
        segments = _segments(call.path)
        if not any(
            _method_matches(call.method, route.method) and _path_matches(segments, route_segments)
            for route, route_segments in compiled
        ):
            problems.append(_no_route(call, segments, compiled))
    return problems


def _method_matches(call: str, route: str) -> bool:
    return route in ("*", call) or (call == "HEAD" and route == "GET")


def _no_route(
    call: HttpCall, segments: list[str], compiled: list[tuple[Route, list[str]]]
) -> Problem:
    shown = "/" + "/".join(segments)
    same_path = sorted(
        {r.method for r, s in compiled if _path_matches(segments, s)}, key=HTTP_METHODS_UPPER.index
    )
    if same_path:
        detail = f"{shown} is served for {', '.join(same_path)} only"
        closest = [r for r, s in compiled if _path_matches(segments, s)][:MAX_CLOSEST]
    else:
        closest = _closest(call, shown, compiled)
        detail = "closest: " + ", ".join(f"{r.method} {r.path} ({r.file})" for r in closest)
    message = f"line {call.line}: {call.method} {call.path} matches no backend route; {detail}"
    refs = tuple(dict.fromkeys(r.file for r in closest if r.file))
    return Problem(call.file, message, "route", refs)


HTTP_METHODS_UPPER = tuple(m.upper() for m in HTTP_METHODS) + ("*",)


def _closest(call: HttpCall, shown: str, compiled: list[tuple[Route, list[str]]]) -> list[Route]:
    def score(item: tuple[Route, list[str]]) -> float:
        route, segments = item
        ratio = difflib.SequenceMatcher(None, shown, "/" + "/".join(segments)).ratio()
        return ratio + (0.1 if route.method == call.method else 0.0)

    ranked = sorted(compiled[:500], key=score, reverse=True)
    return [route for route, _ in ranked[:MAX_CLOSEST]]


_PARAM = "{}"
_REST = "{+}"


def _segments(path: str) -> list[str]:
    """A path's segments, parameters as ``{}`` (``{p:path}`` as ``{+}``), origin and query cut."""
    path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", path.strip(), flags=re.IGNORECASE)
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    segments = []
    for part in path.split("/")[:MAX_SEGMENTS]:
        if not part:
            continue
        if part == ANY:
            segments.append(ANY)
        elif re.fullmatch(r"\{[^{}]*:path\}", part):
            segments.append(_REST)
        elif re.fullmatch(r"\{[^{}]*\}|:\w+|.*\$\{.*|.*\{[^{}]*\}.*", part):
            segments.append(_PARAM)
        else:
            segments.append(part)
    return segments


def _path_matches(call: list[str], route: list[str]) -> bool:
    """Whether two segment lists can name the same path (a table over both: linear in
    their product, which MAX_SEGMENTS bounds)."""
    rows, cols = len(call), len(route)
    table = [[False] * (cols + 1) for _ in range(rows + 1)]
    table[0][0] = True
    for i in range(rows + 1):
        for j in range(cols + 1):
            if not table[i][j]:
                continue
            a = call[i] if i < rows else None
            b = route[j] if j < cols else None
            if a == ANY:
                table[i + 1][j] = True
                if j < cols:
                    table[i + 1][j + 1] = table[i][j + 1] = True
            if b in (ANY, _REST):
                if i < rows:
                    table[i + 1][j + 1] = table[i + 1][j] = True
                if b == ANY:
                    table[i][j + 1] = True
            if a is not None and b is not None and _segment_matches(a, b):
                table[i + 1][j + 1] = True
    return table[rows][cols]


def _segment_matches(a: str, b: str) -> bool:
    return a == b or _PARAM in (a, b) or ANY in (a, b) or _REST in (a, b)


# --- OpenAPI -------------------------------------------------------------------------------


def routes_from_openapi(document: Any, source: str = "openapi.json") -> list[Route]:
    """The operations of an OpenAPI document (the running app's ``/openapi.json``)."""
    return [
        Route(method.upper(), path, source, 0)
        for path, method, _ in openapi_operations(document)
        if method.lower() in HTTP_METHODS
    ]


def openapi_operations(document: Any) -> Iterator[tuple[str, str, Any]]:
    """(path, method, operation) of each entry under an OpenAPI document's ``paths``, in
    its order; entries whose path or method is not a string, or whose path item is not an
    object, are passed over."""
    paths = document.get("paths") if isinstance(document, dict) else None
    for path, operations in paths.items() if isinstance(paths, dict) else ():
        if not isinstance(path, str) or not isinstance(operations, dict):
            continue
        for method, operation in operations.items():
            if isinstance(method, str):
                yield path, method, operation
