"""The processes of a benchmark run and what /proc says about them.

Every process here is one the benchmark started; it is signalled by its own pid only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.support.readiness import READY_FILE_ENV, is_ready

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.01
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
DAEMON_COMMAND = (sys.executable, "-m", "daemon", "run")
MESSAGES_SERVER = "tests.support.messages_server"  # run with python -m


class BenchError(Exception):
    """A scenario could not be measured."""


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU seconds of a live process, all its threads
    (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS_PER_S, int(fields[12]) / CLOCK_TICKS_PER_S


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads."""
    return sum(cpu_times(pid))


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status``, e.g. ``VmHWM`` (peak RSS) or ``VmRSS``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent not idle since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S


def self_cpu_s() -> float:
    """CPU seconds of this benchmark process."""
    return cpu_s(os.getpid())


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)


class ModelServer:
    """The local Messages API server in a process of its own, answering after ``latency_s``."""

    def __init__(self, latency_s: float, log_path: Path) -> None:
        self.latency_s = latency_s
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def __enter__(self) -> ModelServer:
        self._log = self._log_path.open("ab")
        command = [sys.executable, "-m", MESSAGES_SERVER, "--latency-s", str(self.latency_s)]
        self._proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.__exit__(None, None, None)
            raise BenchError(f"the model server did not start:\n{log_tail(self._log_path)}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            _terminate(self._proc, 10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        if self._log is not None:
            self._log.close()


class DaemonProcess:
    """``codegend run`` (or ``command``) with ``env``, its output appended to ``log_path``,
    its ready file beside it."""

    def __init__(
        self, env: dict[str, str], log_path: Path, command: tuple[str, ...] = DAEMON_COMMAND
    ) -> None:
        self.ready_file = log_path.with_name("codegend.ready")
        self.env = {**env, READY_FILE_ENV: str(self.ready_file)}
        self.log_path = log_path
        self.command = command
        self.started_at = 0.0  # time.time() when the process was spawned
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def peak_rss_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self._proc = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    async def start(self) -> float:
        """Spawn and wait until the daemon is ready; returns the seconds that took."""
        self.spawn()
        return await self.wait_ready()

    async def wait_ready(self) -> float:
        """Until the ready file names this process; the seconds since it was spawned."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_ready(self.ready_file, self.pid):
            if not self.alive:
                raise BenchError(f"the daemon exited at start:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon did not start:\n{log_tail(self.log_path)}")
            await asyncio.sleep(POLL_S)
        return time.time() - self.started_at

    def send(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code, or None if the process still runs after ``timeout_s``."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while (code := self._proc.poll()) is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return code

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the daemon drains), SIGKILL if it has not exited after ``timeout_s``."""
        if self._proc is None:
            return None
        self.send(signal.SIGTERM)
        code = await self.wait_exit(timeout_s)
        if code is None:
            return await self.kill()
        return code

    async def kill(self) -> int | None:
        self.send(signal.SIGKILL)
        return await self.wait_exit(10)

    async def __aenter__(self) -> DaemonProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.alive:
            await self.stop()
