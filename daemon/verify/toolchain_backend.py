"""The backend steps of the toolchain tier: a venv and pip install of the requirements, the
FastAPI app imported alone, then served by uvicorn on a loopback port, asked for its
/openapi.json and for each GET route without path parameters.

The app boots with what its settings need and nothing real: the keys of ``.env.example``,
SQLite for every database, a dummy for every secret.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.verify import toolchain_output as out
from daemon.verify.routes import openapi_operations
from daemon.verify.toolchain_output import Finding
from daemon.verify.toolchain_sandbox import (
    OUTPUT_TAIL_BYTES,
    _Command,
    _Outcome,
    _read_tail,
    _Run,
    _start,
    _stop_group,
)

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
BOOT_POLL_S = 0.2
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 10.0
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
_MAIN_APP = re.compile(r"^app\s*(?::[^=\n]*)?=", re.M)

# Imports the app the way uvicorn will; faulthandler prints where an import hangs.
_IMPORT_APP = """\
import faulthandler, importlib, sys
faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)
getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
"""


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
    if not run.passes(_Command("python -m venv", create, run.project, "boot", "")):
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
    return run.passes(command)


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
    return run.passes(command)


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
    return [
        (path, operation)
        for path, method, operation in openapi_operations(openapi)
        if method == "get"
        and path.startswith("/")
        and "{" not in path
        and isinstance(operation, dict)
    ]


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
