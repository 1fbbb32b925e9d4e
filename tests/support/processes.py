"""The ``codegend`` command in subprocesses: its environment, runs, and the daemon's life
(started, ready once its ready file names it, stopped).

Every process here is one the test started; it is signalled by its own pid only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from daemon.settings import Settings, load_settings
from tests.support.readiness import READY_FILE_ENV, is_ready
from tests.support.topics import BOOTSTRAP_ENV, TopicNames

ROOT = Path(__file__).resolve().parents[2]
CODEGEND = [sys.executable, "-m", "daemon"]
START_TIMEOUT_S = 30.0

Env = dict[str, str]


def daemon_env(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_names: TopicNames,
    anthropic_url: str,
    **overrides: str,
) -> Env:
    """The environment of a daemon on this test's topics, store and output folder, talking
    to the local Messages API server, its ready file in ``tmp_path``; ``overrides`` adds or
    replaces variables."""
    return {
        **os.environ,
        "ANTHROPIC_BASE_URL": anthropic_url,
        "ANTHROPIC_API_KEY": "sk-ant-acceptance-secret",
        "CODEGEND_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CODEGEND_KAFKA__REQUESTS_TOPIC": topic_names.requests,
        "CODEGEND_KAFKA__EVENTS_TOPIC": topic_names.events,
        "CODEGEND_KAFKA__DEAD_LETTER_TOPIC": topic_names.dlq,
        # cluster mode is on by default against a broker: this test's own topics
        "CODEGEND_KAFKA__CHANGELOG_TOPIC": topic_names.changelog,
        "CODEGEND_KAFKA__COMMANDS_TOPIC": topic_names.commands,
        "CODEGEND_KAFKA__GROUP_ID": f"g-{topic_names.suffix}",
        # tansu keeps a dead member's partitions until its session expires: keep it short
        "CODEGEND_KAFKA__SESSION_TIMEOUT_MS": "6000" if os.environ.get(BOOTSTRAP_ENV) else "2000",
        "CODEGEND_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "CODEGEND_STORE__PATH": str(tmp_path / "codegend.db"),
        "CODEGEND_OUTPUT__DIR": str(tmp_path / "out"),
        "CODEGEND_METRICS__PORT": "0",  # a free port: daemons side by side do not collide
        READY_FILE_ENV: str(tmp_path / "codegend.ready"),
        "PYTHONPATH": str(ROOT),
        **overrides,
    }


def settings_from(variables: Mapping[str, str]) -> Settings:
    """The settings a daemon with this environment runs with."""
    keys = {k: v for k, v in variables.items() if k.startswith("CODEGEND_")}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        return load_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def codegend(
    variables: Mapping[str, str],
    *args: str,
    check: bool = True,
    input_: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run one ``codegend`` command to its end."""
    result = subprocess.run(
        [*CODEGEND, *args],
        env=dict(variables),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_,
        cwd=ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"codegend {args} exited {result.returncode}:\n{result.stderr}")
    return result


def spawn(variables: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``codegend run`` with its output appended to ``log_path``; do not wait."""
    with log_path.open("a") as log:
        return subprocess.Popen(
            [*CODEGEND, "run"], env=dict(variables), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )


def wait_ready(
    process: subprocess.Popen[bytes], variables: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Wait until the daemon's ready file names it; fail with its log if it exited instead."""
    ready_file = Path(variables[READY_FILE_ENV])
    wait_for(
        lambda: is_ready(ready_file, process.pid) or process.poll() is not None, START_TIMEOUT_S
    )
    assert process.poll() is None, log_path.read_text()
    return process


def start_daemon(variables: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``codegend run`` and return once it is ready."""
    return wait_ready(spawn(variables, log_path), variables, log_path)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Signal the daemon (by its pid) unless it has exited; return its exit code."""
    if process.poll() is None:
        os.kill(process.pid, sig)
    return process.wait(timeout=timeout)


def kill(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL the daemon by its pid and reap it."""
    return stop(process, signal.SIGKILL, timeout=10)


def wait_for(condition: Callable[[], object], timeout_s: float, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(poll_s)


def demo_env(**settings: str) -> dict[str, str]:
    """The environment of a user's shell: none of the suite's settings, no key."""
    variables = {
        k: v for k, v in os.environ.items() if not k.startswith(("CODEGEND_", "ANTHROPIC_"))
    }
    return {**variables, "PYTHONPATH": str(ROOT), **settings}
