"""Helpers of the hostile-answers tests: answers scripted per job and phase, and a poller
that watches /healthz from a thread of its own while the daemon digests them."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field, replace

from tests.support.messages_server import (
    Json,
    MessagesServer,
    Recorded,
    Reply,
    auto_reply,
    extract_phase,
    request_text,
)

PROJECT_RE = re.compile(r"^Project: (\S+)$", re.MULTILINE)
HEALTH_INTERVAL_S = 0.1
HEALTH_TIMEOUT_S = 5.0


def project_of(body: Json) -> str | None:
    found = PROJECT_RE.search(request_text(body))
    return found[1] if found else None


class PerJobScript:
    """A responder for the Messages server: the replies scripted for (project, phase), in
    order, then the automatic answer. Several jobs run at once; each gets its own."""

    def __init__(self, server: MessagesServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], deque[Reply]] = {}

    def add(self, project: str, phase: str, *replies: Reply) -> None:
        with self._lock:
            self._queues.setdefault((project, phase), deque()).extend(replies)

    def __call__(self, body: Json) -> Reply:
        key = (project_of(body) or "", extract_phase(body) or "")
        with self._lock:
            queue = self._queues.get(key)
            scripted = queue.popleft() if queue else None
        auto = auto_reply(body, self._server.phase_files)
        if scripted is None:
            return auto
        return scripted if scripted.text is not None else replace(scripted, text=auto.text)

    def calls(self, project: str, phase: str) -> list[Recorded]:
        """The requests the server received for one phase of one job, in order."""
        return [
            r for r in self._server.requests if r.phase == phase and project_of(r.body) == project
        ]


@dataclass
class HealthPoller:
    """GET /healthz every HEALTH_INTERVAL_S from a thread, recording how long each took
    (a request that fails or takes over HEALTH_TIMEOUT_S is recorded as that timeout)."""

    port: int
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthPoller:
        self._thread = threading.Thread(target=self._poll, name="healthz-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEALTH_TIMEOUT_S + 1)

    def _poll(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        while not self._stop.wait(HEALTH_INTERVAL_S):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
                    response.read()
                    if response.status != 200:
                        self.failures.append(f"status {response.status}")
            except Exception as exc:  # recorded, asserted on by the test
                self.failures.append(repr(exc))
            self.latencies_s.append(time.monotonic() - started)
