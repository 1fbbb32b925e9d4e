"""The toolchain tier of project verification: install, type-check, build and boot the project.

``run_toolchain`` runs the frontend's steps (npm install, tsc, the build script), here, then
the backend's (``daemon.verify.toolchain_backend``), each command confined as
``daemon.verify.toolchain_sandbox`` describes, within one time budget for all of them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.checks import Problem
from daemon.verify import toolchain_output as out
from daemon.verify.toolchain_backend import _backend, _requirements_file
from daemon.verify.toolchain_sandbox import Step, _Command, _Run, _scratch


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
    # a venv gets its pip from ensurepip, or from the daemon's own pip (see
    # toolchain_backend._install_backend)
    has_pip = any(importlib.util.find_spec(name) for name in ("pip", "ensurepip"))
    if python and not (importlib.util.find_spec("venv") and has_pip):
        missing.append("a python with venv")
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(missing)} {verb} not installed"


# --- frontend ---------------------------------------------------------------------------


def _frontend(run: _Run) -> bool:
    """npm install, tsc --noEmit (the project's own typescript) and the build script."""
    folder = run.project / "frontend"
    package = "frontend/package.json"
    locked = "frontend/package-lock.json" in run.files
    install = ["npm", "ci" if locked else "install", "--ignore-scripts", "--no-audit", "--no-fund"]
    # cached package metadata is used without asking the registry whether it is current
    install.append("--prefer-offline")
    installed = run.passes(
        _Command(
            "npm install",
            install,
            folder,
            "build",
            package,
            lambda outcome: out.npm_findings(outcome.output, package),
        )
    )
    if not installed:
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
    return run.passes(command)


def _build(run: _Run, folder: Path) -> bool:
    command = _Command(
        "npm run build",
        ["npm", "run", "build"],
        folder,
        "build",
        "frontend/package.json",
        lambda outcome: out.build_findings(outcome.output, run.paths, "frontend"),
    )
    return run.passes(command)


def _has_build_script(package_json: str) -> bool:
    try:
        scripts = json.loads(package_json).get("scripts")
    except (ValueError, AttributeError):
        return False
    return isinstance(scripts, dict) and isinstance(scripts.get("build"), str)
