"""Metrics and health: the daemon's Prometheus metrics, and the HTTP endpoint serving them.

Every metric lives on a registry of the daemon's own, not prometheus-client's global one,
so several daemons (and tests) in one process do not collide. Counters and histograms are
fed at the instrumentation points, one line each; what the store, the consumer and the rate
limiter know (jobs by state, the outbox backlog, the consumer lag, the group's size, the
rate share) is read when Prometheus scrapes.

The endpoint runs in the daemon's event loop on ``metrics.host:metrics.port`` (loopback by
default): ``/metrics`` (the text format), ``/healthz`` (200 while the loop answers) and
``/readyz`` (200 once intake runs, while the broker answers a metadata request and the
store a query, else 503 with the reason). No label carries a setting, a path or anything secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from daemon.contract import Usage
from daemon.errors import ConfigError, StoreError
from daemon.kafka import group_members
from daemon.ratelimit import RateLimiter
from daemon.settings import MetricsSettings
from daemon.states import JobState
from daemon.store import Store

log = logging.getLogger(__name__)
PHASE_BUCKETS_S = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
CALL_BUCKETS_S = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation")
RETRY_REASONS = (
    "rate_limit",
    "overloaded",
    "server",
    "network",
    "stream",
    "repair",
    "continuation",
)
REQUEST_OUTCOMES = ("accepted", "duplicate", "rejected")
READY_TIMEOUT_S = 2.0
LAG_TIMEOUT_S = 0.5
REQUEST_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100


class Readiness:
    """Why the daemon holds back work now, by cause (``disk``, ``model_access``, ...):
    each part that pauses itself sets its cause and clears it once the cause is gone;
    ``/readyz`` answers 503 with every cause set."""

    def __init__(self) -> None:
        self._causes: dict[str, str] = {}

    def set(self, cause: str, reason: str) -> None:
        self._causes[cause] = reason

    def clear(self, cause: str) -> None:
        self._causes.pop(cause, None)

    def reason(self) -> str | None:
        """Every cause set, in the order they were set; None when nothing holds work back."""
        return "; ".join(self._causes.values()) or None


class Metrics:
    """One daemon's metrics. The methods are the instrumentation points' one-liners."""

    def __init__(self) -> None:
        self.readiness = Readiness()
        self.registry = CollectorRegistry()
        registry = self.registry
        self.phase_duration = Histogram(
            "codegend_phase_duration_seconds",
            "Time one run of a phase took, by outcome: completed, failed, deferred (put "
            "aside for a long retry-after), interrupted (shutdown or cancel)",
            ["phase", "outcome"],
            buckets=PHASE_BUCKETS_S,
            registry=registry,
        )
        self.model_call = Histogram(
            "codegend_model_call_seconds",
            "Time one model call took (streaming included), by outcome: answered, failed",
            ["phase", "outcome"],
            buckets=CALL_BUCKETS_S,
            registry=registry,
        )
        self.tokens = Counter(
            "codegend_tokens",
            "Tokens of the answered model calls, by kind: input, output, cache_read, "
            "cache_creation",
            ["kind"],
            registry=registry,
        )
        self.retries = Counter(
            "codegend_retries",
            "Model calls made again, by reason: rate_limit, overloaded, server, network, "
            "stream (the call failed), repair (the answer was invalid or its code failed the "
            "checks), continuation (the answer was cut or the phase not yet complete)",
            ["reason"],
            registry=registry,
        )
        self.events_published = Counter(
            "codegend_events_published",
            "Events the broker acknowledged on the events topic (a re-publish after a crash "
            "counts again)",
            registry=registry,
        )
        self.requests = Counter(
            "codegend_requests",
            "Messages read from the requests topic, by outcome: accepted (a new job), "
            "duplicate (its request_id has a job), rejected (sent to the dead-letter topic)",
            ["outcome"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "codegend_consumer_lag",
            "Requests on the topic not yet read, per assigned partition (high watermark "
            "minus the consumer's position), as of the scrape",
            ["partition"],
            registry=registry,
        )
        self.group_members = Gauge(
            "codegend_group_members",
            "Members of the consumer group, as the group leader's assignor counted them at "
            "the last assignment; 0 while unknown (before the first assignment, during a "
            "rebalance, while the group assigns by round robin)",
            registry=registry,
        )
        self.rate_share = Gauge(
            "codegend_rate_share",
            "The fraction of the configured llm rate limits this daemon uses: partitions "
            "owned / partitions of the requests topic (1 outside cluster mode)",
            registry=registry,
        )
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        for reason in RETRY_REASONS:
            self.retries.labels(reason)
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        self._consumer: AIOKafkaConsumer | None = None

    def watch(
        self, store: Store, consumer: AIOKafkaConsumer, limiter: RateLimiter | None = None
    ) -> None:
        """Read jobs by state and the outbox backlog from ``store``, the lag and the group's
        size from ``consumer`` (one of ``daemon.kafka.make_consumer``) and the rate share from
        ``limiter``, at every scrape."""
        self.registry.register(_StoreCollector(store))
        self._consumer = consumer
        self.group_members.set_function(lambda: group_members(consumer))
        if limiter is not None:
            self.rate_share.set_function(lambda: limiter.share)

    # -- the instrumentation points

    def phase_ended(self, phase: str, outcome: str, started: float) -> None:
        """``started``: the ``time.monotonic()`` at the phase's start."""
        self.phase_duration.labels(phase, outcome).observe(time.monotonic() - started)

    def call_answered(self, phase: str, started: float, usage: Usage) -> None:
        self.model_call.labels(phase, "answered").observe(time.monotonic() - started)
        self.tokens.labels("input").inc(usage.input_tokens)
        self.tokens.labels("output").inc(usage.output_tokens)
        self.tokens.labels("cache_read").inc(usage.cache_read_input_tokens)
        self.tokens.labels("cache_creation").inc(usage.cache_creation_input_tokens)

    def call_failed(self, phase: str, started: float) -> None:
        self.model_call.labels(phase, "failed").observe(time.monotonic() - started)

    def retry(self, reason: str) -> None:
        self.retries.labels(reason).inc()

    # -- scraping

    async def scrape(self) -> bytes:
        await self._refresh_lag()
        return generate_latest(self.registry)

    async def _refresh_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        self.consumer_lag.clear()  # partitions that moved to another daemon drop out
        for tp in sorted(consumer.assignment()):
            highwater = consumer.highwater(tp)
            if highwater is None:  # nothing fetched from it yet
                continue
            try:
                async with asyncio.timeout(LAG_TIMEOUT_S):
                    position = await consumer.position(tp)
            except (TimeoutError, KafkaError):
                continue  # reassigned meanwhile, or its position is still being looked up
            self.consumer_lag.labels(str(tp.partition)).set(max(0, highwater - position))


class _StoreCollector:
    """Jobs by state and the outbox backlog, counted in the store at each scrape."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily("codegend_jobs", "", labels=["state"]),
            GaugeMetricFamily("codegend_outbox_backlog", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        try:
            states = self._store.jobs_by_state()
            backlog = self._store.outbox_backlog()
        except (sqlite3.Error, StoreError) as exc:
            log.warning("metrics: the store did not answer (%s)", exc)
            return
        jobs = GaugeMetricFamily(
            "codegend_jobs",
            "Jobs in the store by state: PENDING, a phase's name (running or waiting at "
            "it), or a final state (COMPLETED, PARTIAL, FAILED, CANCELLED)",
            labels=["state"],
        )
        for state in JobState:
            jobs.add_metric([state.name], states.get(state.name, 0))
        yield jobs
        yield GaugeMetricFamily(
            "codegend_outbox_backlog",
            "Events committed in the store and not yet acknowledged by the broker",
            value=backlog,
        )


async def not_ready(store: Store, producer: AIOKafkaProducer) -> str | None:
    """Why the daemon cannot do its work now, or None: the store must answer a query and
    the broker a metadata request within ``READY_TIMEOUT_S``."""
    try:
        store.outbox_backlog()
    except (sqlite3.Error, StoreError) as exc:
        return f"store: {exc}"
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await producer.client.fetch_all_metadata()
    except TimeoutError:
        return f"broker: no answer to a metadata request within {READY_TIMEOUT_S:g} s"
    except KafkaError as exc:
        return f"broker: {exc}"
    return None


Response = tuple[int, str, bytes]


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.1, one request per connection."""

    def __init__(self, metrics: Metrics, not_ready: Callable[[], Awaitable[str | None]]) -> None:
        self._metrics = metrics
        self._not_ready = not_ready
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, settings: MetricsSettings) -> int:
        """Listen on ``settings.host:settings.port`` (port 0: a free one); the bound port."""
        try:
            self._server = await asyncio.start_server(self._serve, settings.host, settings.port)
        except OSError as exc:
            raise ConfigError(
                f"metrics.host / metrics.port: cannot listen on {settings.host}:{settings.port} "
                f"({os.strerror(exc.errno) if exc.errno else exc}); choose another port, 0 for a "
                "free one, or set metrics.enabled = false"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                method, path = await _read_request(reader)
                status, content_type, body = await self._respond(method, path)
                _write_response(writer, status, content_type, body, head_only=method == "HEAD")
                await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # a client that sent no whole request, or left: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"GET or HEAD\n"
        if path == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, await self._metrics.scrape()
        if path == "/healthz":
            return HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            reason = await self._not_ready()
            if reason is None:
                return HTTPStatus.OK, "text/plain; charset=utf-8", b"ready\n"
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                f"{reason}\n".encode(),
            )
        return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"/metrics, /healthz, /readyz\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of a request; its headers are read and ignored."""
    line = await reader.readuntil(b"\n")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readuntil(b"\n")).strip() == b"":
            return parts[0].upper(), parts[1].split("?", 1)[0]
    raise ValueError("too many header lines")


def _write_response(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, head_only: bool
) -> None:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if head_only else body))
