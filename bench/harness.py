"""What every scenario stands on: one broker, a daemon configuration per run (its own topics,
store and output folder), and an event log that follows a run's events through the client
library."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.procs import ROOT, BenchError, DaemonProcess, ModelServer, cpu_s
from daemon.broker import EmbeddedBroker
from daemon.client import Client
from daemon.contract import Event, GenerationRequest
from daemon.settings import Settings, load_settings

Config = dict[str, dict[str, Any]]
API_KEY = "sk-ant-bench-not-a-real-key"
SESSION_TIMEOUT_MS = 2000  # tansu holds a group's first join for half of it
HEARTBEAT_INTERVAL_MS = 500
CALLS_IN_FLIGHT = 200  # llm.max_concurrent_requests: never the limit in these scenarios


def merge(base: Config, sections: Config) -> Config:
    merged = {name: dict(values) for name, values in base.items()}
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    return merged


def environment(
    config: Config, model_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The daemon's environment: ``CODEGEND_<SECTION>__<KEY>`` for every value of ``config``."""
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": model_url,
        "ANTHROPIC_API_KEY": API_KEY,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CODEGEND_CHAOS_POINT", None)
    for section, values in config.items():
        for key, value in values.items():
            env[f"CODEGEND_{section.upper()}__{key.upper()}"] = str(value)
    return env | (extra or {})


@dataclass
class Setup:
    """One daemon configuration of one scenario: topics, store, output folder, settings."""

    name: str
    workdir: Path
    config: Config

    @property
    def settings(self) -> Settings:
        return load_settings(**self.config)

    @property
    def store_path(self) -> Path:
        return Path(self.config["store"]["path"])

    def daemon(
        self, server: ModelServer, extra_env: dict[str, str] | None = None, **kwargs: Any
    ) -> DaemonProcess:
        env = environment(self.config, server.url, extra_env)
        return DaemonProcess(env, self.workdir / "daemon.log", **kwargs)


class Bench:
    """One benchmark run: the broker (an embedded tansu unless given), a scratch folder, and
    a run id that keeps its topics apart from any earlier run on the same broker."""

    def __init__(self, bootstrap: str | None = None, keep: bool = False) -> None:
        self._external = bootstrap
        self.bootstrap = bootstrap or ""
        self.broker: EmbeddedBroker | None = None
        self.run_id = uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix="codegend-bench-"))
        self._keep = keep

    async def __aenter__(self) -> Bench:
        if self._external is None:
            self.broker = EmbeddedBroker()
            await self.broker.start()
            self.bootstrap = self.broker.bootstrap_servers
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.broker is not None:
            await self.broker.stop()
        if not self._keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def broker_cpu_s(self) -> float:
        """CPU seconds of the embedded broker (0 for a broker of your own)."""
        pid = self.broker.pid if self.broker else None
        return cpu_s(pid) if pid else 0.0

    def setup(self, name: str, **sections: dict[str, Any]) -> Setup:
        workdir = self.root / name
        workdir.mkdir(parents=True)
        prefix = f"bench-{self.run_id}-{name}"
        base: Config = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "requests_topic": f"{prefix}-requests",
                "events_topic": f"{prefix}-events",
                "dead_letter_topic": f"{prefix}-dlq",
                # cluster mode, the default against a broker: the run's own changelog
                "changelog_topic": f"{prefix}-changelog",
                "commands_topic": f"{prefix}-commands",
                "group_id": prefix,
                "session_timeout_ms": SESSION_TIMEOUT_MS,
                "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            },
            "store": {"path": workdir / "codegend.db"},
            "output": {"dir": workdir / "out"},
            "metrics": {"port": 0},
            "llm": {
                "max_concurrent_requests": CALLS_IN_FLIGHT,
                "requests_per_min": 0,
                "input_tokens_per_min": 0,
                "output_tokens_per_min": 0,
            },
            "jobs": {"shutdown_grace_s": 5},
        }
        return Setup(name, workdir, merge(base, sections))

    def model_server(self, name: str, latency_s: float) -> ModelServer:
        return ModelServer(latency_s, self.root / f"model-server-{name}.log")


def make_requests(prefix: str, count: int) -> list[GenerationRequest]:
    return [
        GenerationRequest.model_validate(
            {
                "request_id": f"{prefix}-{n:05d}",
                "project_name": "bench-shop",
                "mockup": {"kind": "text", "description": "A shop with a cart and a checkout"},
            }
        )
        for n in range(count)
    ]


@dataclass(frozen=True)
class Seen:
    """An event and when the client library yielded it (``time.monotonic()`` and
    ``time.time()``, to compare with the daemon's ``ts``)."""

    at_s: float
    at_wall_s: float
    event: Event


@dataclass
class EventLog:
    """Every event of a setup's events topic, followed with ``Client.events`` from the start
    of the topic (de-duplicated, in seq order per job), and a producer to submit requests."""

    settings: Settings
    bootstrap: str
    seen: list[Seen] = field(default_factory=list)
    by_type: defaultdict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _client: Client | None = None
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventLog:
        self._client = Client(self.settings, self.bootstrap)
        self._task = asyncio.create_task(self._follow(), name="bench-events")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    async def _follow(self) -> None:
        assert self._client is not None
        async for event in self._client.events():
            seen = Seen(time.monotonic(), time.time(), event)
            self.seen.append(seen)
            self.by_type[event.type].append(seen)
            self._changed.set()

    async def submit(self, requests: list[GenerationRequest]) -> float:
        """Produce ``requests`` (concurrently, so the producer batches them); returns the
        ``time.monotonic()`` just before the first was sent."""
        assert self._client is not None
        started = time.monotonic()
        await asyncio.gather(*(self._client.submit(request) for request in requests))
        return started

    def count(self, type_: str, jobs: set[str] | None = None) -> int:
        return sum(1 for s in self.by_type[type_] if jobs is None or s.event.job_id in jobs)

    def of_job(self, type_: str, job_id: str) -> list[Seen]:
        return [s for s in self.by_type[type_] if s.event.job_id == job_id]

    def completions(self, jobs: set[str]) -> list[Seen]:
        return [s for s in self.by_type["job.completed"] if s.event.job_id in jobs]

    def statuses(self, jobs: set[str]) -> Counter[str]:
        return Counter(str(s.event.status) for s in self.completions(jobs))

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self._task is not None and self._task.done():
                self._task.result()
                raise BenchError("the event follower stopped")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def wait_completed(self, jobs: set[str], timeout_s: float) -> list[Seen]:
        await self.wait_until(
            lambda: len(self.completions(jobs)) >= len(jobs),
            timeout_s,
            f"{len(jobs)} job.completed events ({len(self.completions(jobs))} so far)",
        )
        return self.completions(jobs)


@contextlib.asynccontextmanager
async def following(setup: Setup, bench: Bench) -> AsyncIterator[EventLog]:
    async with EventLog(setup.settings, bench.bootstrap) as log:
        yield log
