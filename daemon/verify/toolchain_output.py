"""Reading the output of npm, tsc, vite, pip and Python: which project file each error is about.

The toolchain tier (``daemon.verify.toolchain``) runs the tools; this module only reads what
they printed, so it is pure and total: output it does not recognise yields no finding, and
the caller then reports the step's failure as a whole. A finding is ``(path, message)``:
``path`` is a project path (``frontend/src/App.tsx``) and ``message`` one line, led by the
line number when the output gives one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

Finding = tuple[str, str]

MAX_MESSAGE_CHARS = 300
_TSC = re.compile(
    r"^(?P<file>[^\s(][^(]*)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$"
)
_TSC_GLOBAL = re.compile(r"^error (?P<code>TS\d+): (?P<msg>.*)$")
_SOURCE = r"[^\s\"'`()]+\.(?:tsx|ts|jsx|js|mjs|cjs|css|scss|html|json|vue|svg)"
_SOURCE_AT = re.compile(rf"(?P<file>{_SOURCE})(?::(?P<line>\d+)(?::\d+)?| \((?P<pline>\d+):\d+\))?")
_IMPORTED_BY = re.compile(rf"imported by \"?(?P<file>{_SOURCE})")
_FILE_LINE = re.compile(rf"^file: (?P<file>{_SOURCE})(?::(?P<line>\d+))?")
_NPM_ERROR = re.compile(r"^npm (?:error|ERR!) ?(?P<text>.*)$")
_NPM_NOISE = re.compile(r"^(?:code |errno |syscall |path |A complete log|Log files|\d{3}$|$)")
_PIP_NO_MATCH = re.compile(
    r"^ERROR: (?:Could not find a version that satisfies the requirement|"
    r"No matching distribution found for) (?P<req>\S+)"
)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXCEPTION = re.compile(r"^(?:\w+\.)*\w+(?:Error|Exception|Exit|Interrupt|Warning)\b.*$")
_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '(?P<name>[\w.]+)'")
_FAULTHANDLER = re.compile(r"^Timeout \(\d+:\d\d:\d\d(?:\.\d+)?\)!$", re.M)
_REQUIREMENT_NAME = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class ProjectPaths:
    """Turns a path a tool printed into a project path, if it is one of the project's files.

    Tools print paths absolute (under the scratch copy ``root``) or relative to the folder
    they ran in (``base``, e.g. ``frontend``)."""

    root: str  # the scratch copy of the project, resolved, without a trailing slash
    files: frozenset[str]

    def find(self, raw: str, base: str) -> str | None:
        """The project path ``raw`` names, or None if it is not a project file."""
        raw = raw.strip().strip("\"'")
        if raw.startswith(self.root + "/"):
            candidate = raw[len(self.root) + 1 :]
        else:
            candidate = _join(base, raw)
        return candidate if candidate in self.files else None

    def relative(self, text: str) -> str:
        """``text`` with the scratch root taken out of every path (shorter, and stable)."""
        return text.replace(self.root + "/", "")


def _join(base: str, raw: str) -> str:
    parts: list[str] = [part for part in base.split("/") if part]
    for part in raw.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


# --- frontend ---------------------------------------------------------------------------


def tsc_findings(output: str, paths: ProjectPaths, base: str) -> list[Finding]:
    """One finding per tsc error: ``src/X.tsx(12,5): error TS2305: ...`` becomes
    ``(frontend/src/X.tsx, "line 12: TS2305: ...")``; errors in files outside the project
    (a library's types) and global ones are put on the tsconfig."""
    tsconfig = _join(base, "tsconfig.json")
    findings: list[Finding] = []
    for line in output.splitlines():
        if match := _TSC.match(line):
            where = paths.find(match["file"], base)
            message = f"{match['code']}: {match['msg']}"
            if where is None:
                where, message = tsconfig, f"{match['file']}({match['line']}): {message}"
            else:
                message = f"line {match['line']}: {message}"
            findings.append((where, one_line(message)))
        elif match := _TSC_GLOBAL.match(line):
            findings.append((tsconfig, one_line(f"{match['code']}: {match['msg']}")))
    return findings


def build_findings(output: str, paths: ProjectPaths, base: str) -> list[Finding]:
    """The errors of ``npm run build``: tsc's if the script type-checks first, else the
    bundler's (vite, rollup, esbuild, postcss), which stops at its first error and names
    the file in a ``file:`` line, an ``imported by`` clause or the message itself."""
    findings = tsc_findings(output, paths, base)
    if findings:
        return findings
    block = _build_error_block(output)
    if not block:
        return []
    message = paths.relative(block[0])
    if message.rstrip().endswith(":") and len(block) > 1:
        message = f"{message} {paths.relative(block[1])}"
    where, line = _bundler_location(block, paths, base)
    if where is None:
        return []
    prefix = f"line {line}: " if line else ""
    return [(where, one_line(prefix + message))]


def _build_error_block(output: str) -> list[str]:
    lines = [line.strip() for line in output.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("error during build:"):
            return [text for text in lines[index + 1 :] if text][:40]
    return [line for line in lines if "error" in line.lower()][:40]


def _bundler_location(block: list[str], paths: ProjectPaths, base: str) -> tuple[str | None, str]:
    """The importer when the error names one, else the ``file:`` line, else the first
    project file the error mentions; with the first line number printed beside it."""
    text = "\n".join(block)
    where = next(
        (found for m in _IMPORTED_BY.finditer(text) if (found := paths.find(m["file"], base))),
        None,
    )
    for line in block if where is None else []:
        if (match := _FILE_LINE.match(line)) and (where := paths.find(match["file"], base)):
            break
    mentions = [
        (paths.find(m["file"], base), m["line"] or m["pline"]) for m in _SOURCE_AT.finditer(text)
    ]
    where = where or next((found for found, _ in mentions if found), None)
    line = next((number for found, number in mentions if found == where and number), "")
    return where, line


def npm_findings(output: str, package_json: str) -> list[Finding]:
    """npm's error, on the package.json: its code and the most telling line of the report
    (for a 404, the ``'name@range' is not in this registry`` line)."""
    texts = [m["text"].strip() for line in output.splitlines() if (m := _NPM_ERROR.match(line))]
    code = next((text[5:] for text in texts if text.startswith("code ")), "")
    telling = [text for text in texts if not _NPM_NOISE.match(text)]
    if not telling:
        return []
    registry = [text for text in telling if "is not in this registry" in text]
    detail = (registry or telling)[0].removeprefix("404").strip()
    return [(package_json, one_line(f"npm install: {code}: {detail}" if code else detail))]


# --- backend ----------------------------------------------------------------------------


def pip_findings(output: str, requirements: str, text: str) -> list[Finding]:
    """One finding per requirement pip could not satisfy, on its line of the requirements
    file; another ``ERROR:`` (an invalid line, a conflict) as it is."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for line in output.splitlines():
        if match := _PIP_NO_MATCH.match(line):
            requirement = match["req"]
            if requirement in seen:
                continue
            seen.add(requirement)
            number = _requirement_line(text, requirement)
            prefix = f"line {number}: " if number else ""
            message = f"{prefix}{requirement}: no matching distribution found on the package index"
            findings.append((requirements, one_line(message + " (wheels only)")))
    if findings:
        return findings
    errors = [line for line in output.splitlines() if line.startswith("ERROR: ")]
    return [(requirements, one_line(errors[0][7:]))] if errors else []


def _requirement_line(text: str, requirement: str) -> int | None:
    wanted = _normalise(_REQUIREMENT_NAME.match(requirement))
    for number, line in enumerate(text.splitlines(), start=1):
        if wanted and _normalise(_REQUIREMENT_NAME.match(line)) == wanted:
            return number
    return None


def _normalise(match: re.Match[str] | None) -> str:
    return re.sub(r"[-_.]+", "-", match["name"]).lower() if match else ""


@dataclass(frozen=True)
class Frame:
    """One traceback frame inside the project."""

    path: str
    line: int


def python_findings(
    output: str, paths: ProjectPaths, fallback: str, requirements: str | None
) -> list[Finding]:
    """The last traceback's exception, on the deepest frame inside the project (else on
    ``fallback``, the app's main file). A missing third-party module is a finding of the
    requirements file, naming the import that needed it."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last):" in line]
    if not starts:
        return _bare_error(lines, fallback)
    block = lines[starts[-1] + 1 :]
    frames = list(_project_frames(block, paths))
    exception = _exception_line(block)
    if exception is None:
        return []
    frame = frames[-1] if frames else None
    missing = _MISSING_MODULE.match(exception)
    if missing and requirements and not _is_project_module(missing["name"], paths):
        where = f" (imported at {frame.path} line {frame.line})" if frame else ""
        message = f"{exception}{where}: add the package to the requirements"
        return [(requirements, one_line(message))]
    if frame is None:
        return [(fallback, one_line(exception))]
    return [(frame.path, one_line(f"line {frame.line}: {exception}"))]


def faulthandler_fired(output: str) -> bool:
    """Whether ``faulthandler.dump_traceback_later`` dumped the stack (and exited)."""
    return _FAULTHANDLER.search(output) is not None


def hang_location(output: str, paths: ProjectPaths) -> Frame | None:
    """Where a Python process stood when faulthandler's timer fired: the first project
    frame of its dump (the most recent call comes first); None if there is none."""
    match = _FAULTHANDLER.search(output)
    if match is None:
        return None
    return next(_project_frames(output[match.end() :].splitlines(), paths), None)


def _bare_error(lines: list[str], fallback: str) -> list[Finding]:
    """An error printed without a traceback (uvicorn's ``Error loading ASGI app``)."""
    for line in reversed(lines):
        text = re.sub(r"^(?:ERROR|CRITICAL):\s*", "", line.strip())
        if text.startswith("Error loading ASGI app") or _EXCEPTION.match(text):
            return [(fallback, one_line(text))]
    return []


def _project_frames(lines: Iterable[str], paths: ProjectPaths) -> Iterator[Frame]:
    for line in lines:
        match = _FRAME.match(line)
        if match and (where := paths.find(match["file"], "")):
            yield Frame(where, int(match["line"]))


def _exception_line(block: list[str]) -> str | None:
    """The exception of a traceback: the first line after its last frame that is not
    indented (code and carets are)."""
    last_frame = max((i for i, line in enumerate(block) if _FRAME.match(line)), default=-1)
    for line in block[last_frame + 1 :]:
        if line and not line[0].isspace():
            return re.sub(r"^(?:ERROR|CRITICAL):\s*", "", line.strip())
    return None


def _is_project_module(name: str, paths: ProjectPaths) -> bool:
    """Whether the top-level package ``name`` starts with is a folder or module of the
    backend (then the import is wrong, not the requirements)."""
    top = name.split(".")[0]
    prefixes = (f"backend/{top}/", f"backend/src/{top}/")
    modules = (f"backend/{top}.py", f"backend/src/{top}.py")
    return any(path.startswith(prefixes) or path in modules for path in paths.files)


def last_exception(output: str) -> str | None:
    """The exception of the last traceback in ``output`` (a server's log of a failed
    request), with the deepest project frame's place when the caller wants it."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last):" in line]
    return _exception_line(lines[starts[-1] + 1 :]) if starts else None


def deepest_frame(output: str, paths: ProjectPaths) -> Frame | None:
    """The deepest project frame of the last traceback in ``output``."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last):" in line]
    if not starts:
        return None
    frames = list(_project_frames(lines[starts[-1] + 1 :], paths))
    return frames[-1] if frames else None


def route_source(
    files: Mapping[str, str], operation: Mapping[str, object], path: str
) -> Frame | None:
    """The backend file and line of the function serving ``GET path``: FastAPI's default
    operationId is the function's name followed by the path and the method; the first
    tag naming a module (``cars`` → ``routers/cars.py``) is the second guess."""
    operation_id = str(operation.get("operationId", ""))
    suffix = re.sub(r"\W", "_", path) + "_get"
    name = operation_id.removesuffix(suffix) if operation_id.endswith(suffix) else operation_id
    if name and (frame := _definition(files, name)):
        return frame
    tags = operation.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        stem = re.sub(r"\W+", "_", str(tag)).lower()
        for candidate in sorted(files):
            if candidate.startswith("backend/") and candidate.endswith(f"/{stem}.py"):
                return Frame(candidate, 0)
    return None


def _definition(files: Mapping[str, str], name: str) -> Frame | None:
    """Where ``def name`` is defined under a GET decorator in the backend."""
    pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", re.M)
    for path in sorted(files):
        if not (path.startswith("backend/") and path.endswith(".py")):
            continue
        for match in pattern.finditer(files[path]):
            before = files[path][: match.start()]
            decorators = before.splitlines()[-6:]
            if any(re.search(r"\.(?:get|api_route)\(", line) for line in decorators):
                return Frame(path, before.count("\n") + 1)
    return None
