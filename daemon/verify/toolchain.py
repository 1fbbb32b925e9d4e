"""The toolchain tier of project verification: install, type-check, build and boot the project.

This RUNS GENERATED CODE, so every command is confined:

- a child process in a session of its own; when its step ends (or the time budget does),
  its whole process group is killed, so nothing it started outlives the step;
- an environment built from scratch: PATH, HOME and TMPDIR inside the run's scratch folder,
  LANG, the package caches and a few settings that keep the tools quiet and non-interactive.
  Nothing is inherited, so the daemon's API key and broker credentials never reach a child;
- resource limits. RLIMIT_DATA caps private writable memory at ``memory_mb``; RLIMIT_AS is
  not used because it counts address space that is only reserved, which node's V8 (code
  range, WebAssembly guard regions) and Go's runtime (esbuild) reserve by the gigabyte.
  RLIMIT_FSIZE bounds any one file written, RLIMIT_CORE = 0 keeps crashes from writing
  cores. RLIMIT_NPROC is per user (it would count the daemon's processes and other jobs'),
  so it is not set. The limits are set by a launcher that then execs the command, rather
  than by ``preexec_fn``, which is unsafe in a threaded process (the daemon calls this from
  a thread);
- one scratch folder per run, removed afterwards; only the package caches under
  ``cache_dir`` are shared between runs (npm and pip both handle concurrent use);
- one time budget, ``timeout_s``, across all steps; servers listen on 127.0.0.1 only.

The network is not cut off: npm and pip need their registries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.checks import Problem
from daemon.verify import toolchain_output as out
from daemon.verify.toolchain_output import Finding, ProjectPaths

MAX_PROBLEMS = 50
DETAIL_LINES = 15
DETAIL_LINE_CHARS = 200
MAX_FILE_MB = 2048  # RLIMIT_FSIZE: a large wheel fits, a runaway log does not
OUTPUT_TAIL_BYTES = 2 * 1024 * 1024  # what is read back of a command's output
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
BOOT_POLL_S = 0.2
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
FAULTHANDLER_MARGIN_S = 1.0  # the import dumps its stack this long before it is killed
URL_SAFE = "/:@!$&'()*+,;=-._~"  # kept as they are in a route's path
SQLITE_URL = "sqlite:///./verify.db"
DUMMY_SECRET = "codegend-verify-dummy-secret-0123456789abcdef0123456789"
_SECRET_KEY = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY|ACCESS_KEY|CREDENTIAL")
_DATABASE_VALUE = re.compile(r"^(?:postgres(?:ql)?|mysql|mariadb|mssql|oracle)(?:\+\w+)?://")
_PLAIN_VALUE = re.compile(r"^(?:-?\d+(?:\.\d+)?|true|false|yes|no|on|off)$", re.I)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_APP_ASSIGNMENT = re.compile(
    r"^(?P<name>[A-Za-z_]\w*)\s*(?::[^=\n]*)?=\s*(?:fastapi\.)?FastAPI\(", re.M
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MAIN_APP = re.compile(r"^app\s*(?::[^=\n]*)?=", re.M)

# Sets the limits given as arguments, then becomes the command: see the module docstring.
_LAUNCHER = """\
import os, resource, sys
for name, value in zip(("RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_CORE"), sys.argv[1:4]):
    kind = getattr(resource, name)
    hard = resource.getrlimit(kind)[1]
    value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
    resource.setrlimit(kind, (value, value))
os.execv(sys.argv[4], sys.argv[4:])
"""
# Imports the app the way uvicorn will; faulthandler prints where an import hangs.
_IMPORT_APP = """\
import faulthandler, importlib, sys
faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)
getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
"""


@dataclass(frozen=True)
class Step:
    """One command of the tier; ``detail`` is the last lines of its output, shortened."""

    name: str
    ok: bool
    duration_s: float
    detail: str


@dataclass
class ToolchainReport:
    """What the tier found. ``builds``: the frontend built and the backend booted (a side
    the project does not have counts as passed); False when the tier was ``skipped``."""

    steps: list[Step]
    problems: list[Problem]
    builds: bool
    openapi: dict[str, Any] | None  # the backend's /openapi.json when it booted
    skipped: str | None = None  # why the tier did not run


def toolchain_available() -> str | None:
    """None if node, npm and a Python with venv exist, else why the tier cannot run."""
    return _missing_tools(node=True, python=True)


def run_toolchain(
    files: Mapping[str, str],
    *,
    cache_dir: Path,
    timeout_s: float,
    memory_mb: int,
    backend_package: str | None = None,
) -> ToolchainReport:
    """Install, type-check and build the frontend, then install, import, boot and query
    the backend, in a scratch folder, within ``timeout_s`` in all. Synchronous: the daemon
    calls it in a thread."""
    has_frontend = "frontend/package.json" in files
    requirements = _requirements_file(files)
    if not has_frontend and requirements is None:
        return _skipped("the project has no frontend/package.json and no backend requirements.txt")
    if reason := _missing_tools(node=has_frontend, python=requirements is not None):
        return _skipped(reason)
    with _scratch() as scratch:
        run = _Run.create(files, scratch, cache_dir, timeout_s, memory_mb)
        frontend_ok = _frontend(run) if has_frontend else True
        backend_ok, openapi = (
            _backend(run, requirements, backend_package) if requirements else (True, None)
        )
    return ToolchainReport(run.steps, run.problems, frontend_ok and backend_ok, openapi)


def _skipped(reason: str) -> ToolchainReport:
    return ToolchainReport(steps=[], problems=[], builds=False, openapi=None, skipped=reason)


def _missing_tools(*, node: bool, python: bool) -> str | None:
    missing = [name for name in ("node", "npm") if node and shutil.which(name) is None]
    # a venv gets its pip from ensurepip, or from the daemon's own pip (see _install_backend)
    has_pip = any(importlib.util.find_spec(name) for name in ("pip", "ensurepip"))
    if python and not (importlib.util.find_spec("venv") and has_pip):
        missing.append("a python with venv")
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(missing)} {verb} not installed"


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A folder of the run's own, removed afterwards whatever happened."""
    path = Path(tempfile.mkdtemp(prefix="codegend-toolchain-")).resolve()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- one run: its folders, environment, budget and findings ---------------------------


@dataclass
class _Run:
    files: Mapping[str, str]
    project: Path  # the scratch copy of the project
    logs: Path
    env: dict[str, str]
    deadline: float  # time.monotonic()
    budget_s: float
    memory_mb: int
    paths: ProjectPaths
    steps: list[Step] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        files: Mapping[str, str],
        scratch: Path,
        cache_dir: Path,
        timeout_s: float,
        memory_mb: int,
    ) -> _Run:
        project, logs = scratch / "project", scratch / "logs"
        for folder in (project, logs, scratch / "home", scratch / "tmp"):
            folder.mkdir()
        written = _write_files(project, files)
        env = _base_env(scratch, cache_dir.resolve(), memory_mb)
        paths = ProjectPaths(str(project), frozenset(written))
        deadline = time.monotonic() + timeout_s
        return cls(files, project, logs, env, deadline, timeout_s, memory_mb, paths)

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def timed_out(self, name: str, elapsed_s: float) -> str:
        return f"{name}: timed out after {elapsed_s:.0f} s (the toolchain's budget is {self.budget_s:g} s)"

    def report(self, findings: list[Finding], kind: str) -> None:
        """Keep each distinct finding once, up to MAX_PROBLEMS."""
        known = {(problem.path, problem.message) for problem in self.problems}
        for path, raw in findings:
            if len(self.problems) >= MAX_PROBLEMS:
                return
            message = self.paths.relative(raw)
            if (path, message) not in known:
                known.add((path, message))
                self.problems.append(Problem(path, message, fixable_now=bool(path), kind=kind))

    def record(self, name: str, ok: bool, duration_s: float, output: str) -> None:
        self.steps.append(
            Step(name, ok, round(duration_s, 2), _detail(self.paths.relative(output)))
        )

    def step(self, command: _Command) -> _Outcome | None:
        """Run one command within the budget and record it; None if the budget is spent."""
        if self.remaining_s() <= 0:
            message = (
                f"{command.name}: not run, the toolchain's budget of {self.budget_s:g} s was spent"
            )
            self.record(command.name, False, 0.0, message)
            self.report([("", message)], command.kind)
            return None
        log = self.logs / f"{len(self.steps):02d}.log"
        outcome = _run(command, self.env | command.env, self.remaining_s(), self.memory_mb, log)
        self.record(command.name, outcome.ok, outcome.duration_s, outcome.output)
        if outcome.code is None:
            message = self.timed_out(command.name, outcome.duration_s)
            self.report([(command.subject, message)], command.kind)
        elif not outcome.ok:
            findings = command.parse(outcome) or [(command.subject, _failed(command, outcome))]
            self.report(findings, command.kind)
        return outcome


def _failed(command: _Command, outcome: _Outcome) -> str:
    lines = [line.strip() for line in outcome.output.splitlines() if line.strip()]
    last = f": {lines[-1]}" if lines else ""
    return out.one_line(f"{command.name} failed (exit status {outcome.code}){last}")


def _detail(output: str) -> str:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    return "\n".join(out.one_line(line, DETAIL_LINE_CHARS) for line in lines[-DETAIL_LINES:])


def _write_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """Write the project into ``root``; a path that would leave it, or that clashes with
    a folder, is left out (the earlier checks report such paths)."""
    written = []
    for path, content in files.items():
        parts = PurePosixPath(path).parts
        if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
            continue
        target = root.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except (OSError, UnicodeEncodeError):
            continue
        written.append("/".join(parts))
    return written


def _base_env(scratch: Path, cache_dir: Path, memory_mb: int) -> dict[str, str]:
    """Every variable a child gets, from scratch: nothing of the daemon's own environment."""
    tools = [os.path.dirname(found) for name in ("node", "npm") if (found := shutil.which(name))]
    path = list(dict.fromkeys([*tools, *SYSTEM_PATH]))
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "LANG": "C.UTF-8",
        "npm_config_cache": str(cache_dir / "npm"),
        "npm_config_logs_dir": str(scratch / "home" / "npm-logs"),
        "npm_config_update_notifier": "false",
        "PIP_CACHE_DIR": str(cache_dir / "pip"),
        "PIP_NO_INPUT": "1",
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        "CI": "1",  # tools print plain logs, without spinners or prompts
        # V8 fails with a clear "heap out of memory" before it reaches RLIMIT_DATA
        "NODE_OPTIONS": f"--max-old-space-size={memory_mb * 3 // 4}",
    }


# --- running a command ------------------------------------------------------------------


@dataclass(frozen=True)
class _Command:
    name: str
    argv: list[str]
    cwd: Path
    kind: str  # "build" (frontend) or "boot" (backend)
    subject: str  # the project file a failure is put on when its output names none
    parse: Callable[[_Outcome], list[Finding]] = lambda outcome: []
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Outcome:
    code: int | None  # None: killed at the end of the budget
    output: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.code == 0


def _run(
    command: _Command, env: dict[str, str], timeout_s: float, memory_mb: int, log: Path
) -> _Outcome:
    """Run ``command`` to its end or until ``timeout_s``, then kill its process group."""
    started = time.monotonic()
    try:
        process = _start(command.argv, command.cwd, env, memory_mb, log)
    except OSError as exc:  # out of processes or memory: the step fails, the run goes on
        return _Outcome(-1, f"could not start {command.argv[0]}: {exc}", 0.0)
    try:
        code: int | None = process.wait(timeout=max(timeout_s, 0.01))
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _kill_group(process)
    return _Outcome(code, _read_tail(log), time.monotonic() - started)


def _start(
    argv: list[str], cwd: Path, env: dict[str, str], memory_mb: int, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, under the limits, its output going to ``log``."""
    program = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    limits = [str(memory_mb * 1024 * 1024), str(MAX_FILE_MB * 1024 * 1024), "0"]
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, *limits, program, *argv[1:]]
    with log.open("wb") as sink:
        return subprocess.Popen(
            launcher,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group the command leads (its children too), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM first, so a server shuts down cleanly; SIGKILL after STOP_GRACE_S."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_S)
    _kill_group(process)


def _read_tail(log: Path) -> str:
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - OUTPUT_TAIL_BYTES))
        return _ANSI.sub("", handle.read().decode("utf-8", errors="replace"))


# --- frontend ---------------------------------------------------------------------------


def _frontend(run: _Run) -> bool:
    """npm install, tsc --noEmit (the project's own typescript) and the build script."""
    folder = run.project / "frontend"
    package = "frontend/package.json"
    locked = "frontend/package-lock.json" in run.files
    install = ["npm", "ci" if locked else "install", "--ignore-scripts", "--no-audit", "--no-fund"]
    # cached package metadata is used without asking the registry whether it is current
    install.append("--prefer-offline")
    outcome = run.step(
        _Command(
            "npm install",
            install,
            folder,
            "build",
            package,
            lambda outcome: out.npm_findings(outcome.output, package),
        )
    )
    if outcome is None or not outcome.ok:
        return False
    ok = _typecheck(run, folder) if "frontend/tsconfig.json" in run.files else True
    if _has_build_script(run.files[package]):
        ok = _build(run, folder) and ok
    return ok


def _typecheck(run: _Run, folder: Path) -> bool:
    tsc = folder / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        message = "tsconfig.json asks for type checking but typescript is not a dependency"
        run.report([("frontend/package.json", message)], "build")
        run.record("tsc --noEmit", False, 0.0, message)
        return False
    command = _Command(
        "tsc --noEmit",
        [str(tsc), "--noEmit", "--pretty", "false", "-p", "tsconfig.json"],
        folder,
        "build",
        "frontend/tsconfig.json",
        lambda outcome: out.tsc_findings(outcome.output, run.paths, "frontend"),
    )
    outcome = run.step(command)
    return outcome is not None and outcome.ok


def _build(run: _Run, folder: Path) -> bool:
    command = _Command(
        "npm run build",
        ["npm", "run", "build"],
        folder,
        "build",
        "frontend/package.json",
        lambda outcome: out.build_findings(outcome.output, run.paths, "frontend"),
    )
    outcome = run.step(command)
    return outcome is not None and outcome.ok


def _has_build_script(package_json: str) -> bool:
    try:
        scripts = json.loads(package_json).get("scripts")
    except (ValueError, AttributeError):
        return False
    return isinstance(scripts, dict) and isinstance(scripts.get("build"), str)


# --- backend ----------------------------------------------------------------------------


def _requirements_file(files: Mapping[str, str]) -> str | None:
    """``backend/requirements.txt``, else the shallowest requirements.txt under backend/."""
    found = [p for p in files if p.startswith("backend/") and p.endswith("/requirements.txt")]
    return min(found, key=lambda p: (p.count("/"), p)) if found else None


def _find_app(files: Mapping[str, str], backend_package: str | None) -> tuple[str, str] | None:
    """(file, variable) of the FastAPI app: ``backend/<package>/main.py``'s ``app``, else
    the first module (main.py first, shallowest first) that assigns ``FastAPI(...)``."""
    if backend_package:
        main = f"backend/{backend_package}/main.py"
        if _MAIN_APP.search(files.get(main, "")):
            return main, "app"
    modules = [p for p in files if p.startswith("backend/") and p.endswith(".py")]
    for path in sorted(modules, key=lambda p: (not p.endswith("/main.py"), p.count("/"), p)):
        if match := _APP_ASSIGNMENT.search(files[path]):
            return path, match["name"]
    return None


def _module_name(path: str) -> str:
    """``backend/app/main.py`` → ``app.main``: modules are imported from backend/."""
    return (
        path.removeprefix("backend/")
        .removesuffix(".py")
        .removesuffix("/__init__")
        .replace("/", ".")
    )


def _backend(
    run: _Run, requirements: str, backend_package: str | None
) -> tuple[bool, dict[str, Any] | None]:
    """A venv, pip install of the requirements, then the app imported, served and asked
    for /openapi.json and its GET routes."""
    venv = run.project.parent / "venv"
    python = venv / "bin" / "python"
    if not _install_backend(run, venv, requirements):
        return False, None
    found = _find_app(run.files, backend_package)
    if found is None:
        subject = f"backend/{backend_package}/main.py" if backend_package else requirements
        run.report([(subject, "no FastAPI app found: no module assigns FastAPI(...)")], "boot")
        return False, None
    main, variable = found
    target = _AppTarget(main, f"{_module_name(main)}:{variable}", requirements, _app_env(run.files))
    if not _import_app(run, python, target):
        return False, None
    if not list(venv.glob("lib/python*/site-packages/uvicorn/__init__.py")):
        run.report(
            [(requirements, "uvicorn is not among the requirements: nothing can serve the app")],
            "boot",
        )
        return False, None
    return _serve(run, python, target)


def _install_backend(run: _Run, venv: Path, requirements: str) -> bool:
    """A venv, then pip install of the requirements, wheels only (no setup.py runs).

    The daemon's own pip installs into the venv (``pip --python``) when it has one: that
    spares the seconds ensurepip takes to put a pip into every venv."""
    own_pip = importlib.util.find_spec("pip") is not None
    create = [sys.executable, "-m", "venv", *(["--without-pip"] if own_pip else []), str(venv)]
    created = run.step(_Command("python -m venv", create, run.project, "boot", ""))
    if created is None or not created.ok:
        return False
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python] if own_pip else [python, "-m", "pip"]
    pip += ["install", "--disable-pip-version-check", "--progress-bar", "off", "--no-compile"]
    pip += ["--only-binary=:all:", "-r", PurePosixPath(requirements).name]
    text = run.files[requirements]
    command = _Command(
        "pip install",
        pip,
        (run.project / requirements).parent,
        "boot",
        requirements,
        lambda outcome: out.pip_findings(outcome.output, requirements, text),
    )
    installed = run.step(command)
    return installed is not None and installed.ok


@dataclass(frozen=True)
class _AppTarget:
    main: str  # the project file that defines the app
    spec: str  # module:variable, for uvicorn
    requirements: str
    env: dict[str, str]


def _import_app(run: _Run, python: Path, target: _AppTarget) -> bool:
    """Import the app alone first: its errors come without a server's noise, and a hang
    is located (faulthandler dumps the stack just before the budget ends)."""
    module, variable = target.spec.split(":")
    dump_after_s = max(run.remaining_s() - FAULTHANDLER_MARGIN_S, 0.5)
    command = _Command(
        f"import {module}",
        [str(python), "-c", _IMPORT_APP, f"{dump_after_s:.1f}", module, variable],
        run.project / "backend",
        "boot",
        target.main,
        lambda outcome: _import_findings(outcome, run, target, f"import {module}"),
        target.env,
    )
    outcome = run.step(command)
    return outcome is not None and outcome.ok


def _import_findings(outcome: _Outcome, run: _Run, target: _AppTarget, name: str) -> list[Finding]:
    if not out.faulthandler_fired(outcome.output):
        return out.python_findings(outcome.output, run.paths, target.main, target.requirements)
    hang = out.hang_location(outcome.output, run.paths)
    where, prefix = (hang.path, f"line {hang.line}: ") if hang else (target.main, "")
    return [(where, prefix + run.timed_out(name, outcome.duration_s))]


def _app_env(files: Mapping[str, str]) -> dict[str, str]:
    """What the app's settings need to boot with defaults: the keys of .env.example with
    SQLite for databases and a dummy for secrets (never a real value), DATABASE_URL last."""
    env: dict[str, str] = {}
    for example in (".env.example", "backend/.env.example"):
        for key, value in _dotenv(files.get(example, "")).items():
            env[key] = _safe_value(key, value)
    env["DATABASE_URL"] = SQLITE_URL
    return env


def _dotenv(text: str) -> dict[str, str]:
    """KEY=value lines; comments, ``export`` and quotes as dotenv reads them. Keys that
    would change how Python or the loader behave are left out."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip().removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _ENV_KEY.match(key) or key.upper().startswith(("LD_", "PYTHON")):
            continue
        if key in ("PATH", "HOME", "TMPDIR", "LANG"):
            continue
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values


def _safe_value(key: str, value: str) -> str:
    if "DATABASE_URL" in key.upper() or _DATABASE_VALUE.match(value):
        return SQLITE_URL
    if _SECRET_KEY.search(key.upper()) and not _PLAIN_VALUE.match(value):
        return DUMMY_SECRET
    return value


# --- serving the app --------------------------------------------------------------------


def _serve(run: _Run, python: Path, target: _AppTarget) -> tuple[bool, dict[str, Any] | None]:
    """Start uvicorn on a free loopback port, wait for /openapi.json, GET every route
    without path parameters, and stop the server's whole process group."""
    port = _free_port()
    argv = [str(python), "-m", "uvicorn", target.spec, "--host", "127.0.0.1", "--port", str(port)]
    argv.append("--no-access-log")
    log = run.logs / "server.log"
    started = time.monotonic()
    server = _start(argv, run.project / "backend", run.env | target.env, run.memory_mb, log)
    try:
        openapi = _wait_for_openapi(run, server, port, target, log, started)
        if openapi is None:
            return False, None
        _get_routes(run, port, openapi, target, log)
        return True, openapi
    finally:
        _stop_group(server)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_openapi(
    run: _Run,
    server: subprocess.Popen[bytes],
    port: int,
    target: _AppTarget,
    log: Path,
    started: float,
) -> dict[str, Any] | None:
    """Poll until the app answers /openapi.json, exits, or the budget ends."""
    url = f"http://127.0.0.1:{port}/openapi.json"
    while run.remaining_s() > 0:
        if server.poll() is not None:
            output = _read_tail(log)
            run.record("boot", False, time.monotonic() - started, output)
            findings = out.python_findings(output, run.paths, target.main, target.requirements)
            message = f"the server exited with status {server.returncode} before answering"
            run.report(findings or [(target.main, message)], "boot")
            return None
        answer = _get(url, min(CONNECT_TIMEOUT_S, max(run.remaining_s(), 0.01)))
        if answer is not None:
            return _openapi(run, answer, target, _read_tail(log), time.monotonic() - started)
        time.sleep(BOOT_POLL_S)
    elapsed_s = time.monotonic() - started
    run.record("boot", False, elapsed_s, _read_tail(log))
    run.report([(target.main, run.timed_out("boot", elapsed_s))], "boot")
    return None


def _openapi(
    run: _Run, answer: tuple[int, bytes], target: _AppTarget, output: str, elapsed_s: float
) -> dict[str, Any] | None:
    status, body = answer
    try:
        document = json.loads(body) if status == 200 else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        run.record("boot", False, elapsed_s, output)
        run.report(
            [(target.main, f"GET /openapi.json answered {status}, not an OpenAPI document")], "boot"
        )
        return None
    run.record("boot", True, elapsed_s, output)
    return document


def _get(url: str, timeout_s: float) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None if nothing answered. Proxies are never used."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status, response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (OSError, ValueError):
        return None


def _get_routes(
    run: _Run, port: int, openapi: dict[str, Any], target: _AppTarget, log: Path
) -> None:
    """GET every route without path parameters; a status >= 500 (or no answer) is a
    problem of the function serving the route."""
    started = time.monotonic()
    routes = _plain_get_routes(openapi)
    asked, failed = 0, 0
    for path, operation in routes:
        if run.remaining_s() <= 0:
            break
        before = log.stat().st_size
        url = f"http://127.0.0.1:{port}{urllib.parse.quote(path, safe=URL_SAFE)}"
        answer = _get(url, min(REQUEST_TIMEOUT_S, run.remaining_s()))
        asked += 1
        status = answer[0] if answer else None
        if status is None or status >= 500:
            failed += 1
            finding = _route_finding(run, target, path, operation, status, _log_since(log, before))
            run.report([finding], "boot")
    summary = f"{asked} of {len(routes)} GET routes asked, {failed} failed"
    run.record(
        "GET routes", failed == 0 and asked == len(routes), time.monotonic() - started, summary
    )


def _plain_get_routes(openapi: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, operation) of each GET route whose path has no parameter to fill in."""
    paths = openapi.get("paths")
    routes = []
    for path, operations in (paths if isinstance(paths, dict) else {}).items():
        operation = operations.get("get") if isinstance(operations, dict) else None
        if (
            isinstance(path, str)
            and path.startswith("/")
            and "{" not in path
            and isinstance(operation, dict)
        ):
            routes.append((path, operation))
    return routes


def _log_since(log: Path, offset: int) -> str:
    time.sleep(0.05)  # the server logs the traceback right after it answers
    with log.open("rb") as handle:
        handle.seek(offset)
        return handle.read(OUTPUT_TAIL_BYTES).decode("utf-8", errors="replace")


def _route_finding(
    run: _Run,
    target: _AppTarget,
    path: str,
    operation: dict[str, Any],
    status: int | None,
    log: str,
) -> Finding:
    source = out.route_source(run.files, operation, path)
    where = source.path if source else target.main
    prefix = f"line {source.line}: " if source and source.line else ""
    outcome = f"answered {status}" if status else "did not answer"
    message = f"{prefix}GET {path} {outcome}"
    if exception := out.last_exception(log):
        frame = out.deepest_frame(log, run.paths)
        at = f" at {frame.path} line {frame.line}" if frame else ""
        message += f": {exception}{at}"
    return where, out.one_line(message)
