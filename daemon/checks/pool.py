"""The checks off the event loop: ``run_checks`` runs an entry point in a worker process,
within a time budget, and a check that does not finish becomes one ``skipped`` problem."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from daemon.checks.problem import DEFAULT_MAX_FILE_BYTES, Problem
from daemon.checks.project import check_files, check_project

CHECK_WORKERS = 2  # checks run at once (each in a process of its own)
WORKER_MEMORY_BYTES = 2 * 1024**3  # address space of a worker: a runaway parse fails there
_FRAME = struct.Struct("!Q")
_POLL_S = 0.1


class ChecksSkipped(Exception):  # noqa: N818 - a condition, reported as a warning
    """The code checks did not finish."""


@dataclass(frozen=True)
class CheckLimits:
    """``jobs.check_timeout_s`` and ``jobs.check_max_file_bytes``."""

    timeout_s: float = 10.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def _verify_static(files: Mapping[str, str], max_file_bytes: int) -> list[Problem]:
    from daemon.verify.static import static_problems  # imports tree-sitter: only when asked

    return static_problems(files, max_file_bytes)


def _check_plan(
    phase: str, planned: Any, written: Mapping[str, str], max_file_bytes: int
) -> list[Problem]:
    from daemon.verify.conformance import plan_problems

    small = {path: content for path, content in written.items() if len(content) <= max_file_bytes}
    return plan_problems(phase, planned, written, small)


# the functions a worker runs, by name; their arguments come pickled from run_checks
_ENTRY_POINTS: dict[str, Callable[..., list[Problem]]] = {
    "check_files": check_files,
    "check_project": check_project,
    "verify_static": _verify_static,
    "check_plan": _check_plan,
}


async def run_checks(name: str, limits: CheckLimits, *args: Any) -> list[Problem]:
    """``check_files``, ``check_project``, ``verify_static`` or ``check_plan`` in a worker
    process, within ``limits.timeout_s``; each entry point gets ``limits.max_file_bytes`` last.

    Never raises for what the files hold: checks that time out, or whose worker dies, give
    one ``skipped`` problem saying so (the checks are advice; the phase goes on without)."""
    try:
        return await _pool().run(name, (*args, limits.max_file_bytes), limits.timeout_s)
    except ChecksSkipped as exc:
        return [Problem("", f"code checks skipped: {exc}", kind="skipped")]


class CheckPool:
    """Worker processes running the checks, each run within a time budget.

    The checks are linear in the size of the files, but they parse text a model chose, over
    a whole job, with the C parsers of the standard library. A worker process keeps that
    work off the event loop and its GIL, a crash in a C parser costs one run, and it is the
    one thing that truly stops a run past its budget: a thread cannot be stopped, a process
    is killed (and a fresh one started for the next run). Workers are started on demand and
    kept; they hold nothing of the environment but what Python needs (no API key) and exit
    when the daemon's end of their pipe closes, however the daemon ended."""

    def __init__(self, workers: int = CHECK_WORKERS) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="codegend-checks")

    async def run(self, name: str, args: tuple[Any, ...], timeout_s: float) -> list[Problem]:
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._threads, self._exchange, name, args, timeout_s, stop
            )
        except asyncio.CancelledError:
            stop.set()  # the thread kills its worker at once instead of waiting
            raise

    def _exchange(
        self, name: str, args: tuple[Any, ...], timeout_s: float, stop: threading.Event
    ) -> list[Problem]:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None and worker.process.poll() is not None:
            worker.kill()  # died while idle (the OOM killer, say): start another
            worker = None
        try:
            worker = worker or _Worker()
            problems = worker.call(name, args, timeout_s, stop)
        except BaseException:
            if worker is not None:
                worker.kill()
            raise
        with self._lock:
            self._idle.append(worker)
        return problems

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)


class _Worker:
    """One worker process: requests and answers are pickles, each led by its length."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        env["PYTHONPATH"] = package_root
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from daemon.checks.pool import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # not the daemon's stderr: whoever reads it to its end must not wait for a
                # worker finishing a run after the daemon died
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            raise ChecksSkipped(f"no worker process ({exc})") from None

    def call(
        self, name: str, args: tuple[Any, ...], timeout_s: float, stop: threading.Event
    ) -> list[Problem]:
        deadline = time.monotonic() + timeout_s
        try:
            _write_frame(self._stdin, pickle.dumps((name, args), pickle.HIGHEST_PROTOCOL))
            status, value = pickle.loads(self._read_frame(deadline, timeout_s, stop))
        except OSError as exc:  # the worker died (its pipe broke)
            code = self.process.poll()
            reason = f"exit status {code}" if code is not None else str(exc)
            raise ChecksSkipped(f"the checks' worker process failed ({reason})") from None
        if status != "ok":
            raise ChecksSkipped(f"the checks failed ({value})")
        return list(value)

    @property
    def _stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    def _read_frame(self, deadline: float, timeout_s: float, stop: threading.Event) -> bytes:
        assert self.process.stdout is not None
        fd, data, need = self.process.stdout.fileno(), bytearray(), _FRAME.size
        while len(data) < need:
            if stop.is_set():
                raise ChecksSkipped("stopped")
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise ChecksSkipped(f"they took longer than jobs.check_timeout_s = {timeout_s:g} s")
            if select.select([fd], [], [], min(left_s, _POLL_S))[0]:
                chunk = os.read(fd, max(need - len(data), 65536))
                if not chunk:
                    raise OSError("end of output")
                data += chunk
            if need == _FRAME.size and len(data) >= need:
                need += _FRAME.unpack_from(data)[0]
        return bytes(data[_FRAME.size : need])

    def kill(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.process.kill()
        self.process.wait()


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve() -> None:
    """A worker's loop: run each request, answer it; end when the daemon's pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    sys.stdout = sys.stderr  # whatever else prints must not mix into the answers
    while (header := _read_exactly(requests, _FRAME.size)) is not None:
        payload = _read_exactly(requests, _FRAME.unpack(header)[0])
        if payload is None:
            return
        name, args = pickle.loads(payload)
        try:
            answer: tuple[str, Any] = ("ok", _ENTRY_POINTS[name](*args))
        except (Exception, RecursionError, MemoryError) as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}"[:500])
        try:
            _write_frame(answers, pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


_the_pool: CheckPool | None = None


def _pool() -> CheckPool:
    global _the_pool
    if _the_pool is None:
        _the_pool = CheckPool()
        atexit.register(_the_pool.close)
    return _the_pool
