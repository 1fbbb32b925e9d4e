"""How the toolchain tier runs a command of the project. This RUNS GENERATED CODE, so every
command is confined:

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

The network is not cut off: npm and pip need their registries. A ``_Run`` is one run of the
tier: its folders, environment, budget, and the steps and problems found so far.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from daemon.checks import Problem
from daemon.verify import toolchain_output as out
from daemon.verify.toolchain_output import Finding, ProjectPaths

MAX_PROBLEMS = 50
DETAIL_LINES = 15
DETAIL_LINE_CHARS = 200
MAX_FILE_MB = 2048  # RLIMIT_FSIZE: a large wheel fits, a runaway log does not
OUTPUT_TAIL_BYTES = 2 * 1024 * 1024  # what is read back of a command's output
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
STOP_GRACE_S = 3.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

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


@dataclass(frozen=True)
class Step:
    """One command of the tier; ``detail`` is the last lines of its output, shortened."""

    name: str
    ok: bool
    duration_s: float
    detail: str


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
                self.problems.append(Problem(path, message, kind=kind))

    def record(self, name: str, ok: bool, duration_s: float, output: str) -> None:
        self.steps.append(
            Step(name, ok, round(duration_s, 2), _detail(self.paths.relative(output)))
        )

    def passes(self, command: _Command) -> bool:
        """Run one command as ``step`` does; whether it ran and exited with status 0."""
        outcome = self.step(command)
        return outcome is not None and outcome.ok

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
        outcome = _run(
            command, {**self.env, **command.env}, self.remaining_s(), self.memory_mb, log
        )
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
