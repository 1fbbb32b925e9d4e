"""The metrics endpoint scraped while the real daemon runs jobs, and its health checks
following the broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.states import PHASE_NAMES
from tests.support.daemons import running
from tests.support.health import get
from tests.support.messages_server import Reply, extract_phase
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    status, body = await get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (key, found), value in samples.items() if key == name and wanted <= found)


def phases_done(samples: Samples) -> float:
    return total(samples, "codegend_phase_duration_seconds_count", outcome="completed")


HELD = "FE_SETUP"
DONE_BEFORE_HELD = 6  # ARCH, DB and the backend branch, in either execution mode


@pytest.fixture
def gate(messages_server) -> Iterator[threading.Event]:
    """Answers for HELD wait until the test sets the event, so a scrape sees the job mid-way."""
    opened = threading.Event()
    answer = messages_server.responder

    def held(body):
        if extract_phase(body) == HELD:
            opened.wait(20)
        return answer(body)

    messages_server.responder = held
    yield opened
    opened.set()


async def scrape_when(port: int, ready: Callable[[Samples], bool]) -> Samples:
    async with asyncio.timeout(20):
        while not ready(samples := await scrape(port)):
            await asyncio.sleep(0.02)
    return samples


async def test_metrics_move_as_a_job_progresses(make_settings, messages_server, gate):
    messages_server.enqueue("DB", Reply(status=429, headers={"retry-after-ms": "50"}))
    settings = make_settings()
    async with running(settings) as daemon:
        port = daemon.metrics_port
        assert port and await get(port, "/healthz") == (200, "ok\n")
        before = await scrape(port)
        await produce(settings, request_bytes(request_id="metered"))
        during = await scrape_when(port, lambda s: phases_done(s) == DONE_BEFORE_HELD)
        gate.set()
        after = await scrape_when(
            port,
            lambda s: (
                total(s, "codegend_jobs", state="COMPLETED") == 1
                and total(s, "codegend_outbox_backlog") == 0
            ),
        )

    assert total(before, "codegend_jobs") == 0 and total(before, "codegend_tokens_total") == 0
    assert total(before, "codegend_phase_duration_seconds_count") == 0
    assert total(during, "codegend_jobs", state="COMPLETED") == 0
    assert total(during, "codegend_jobs") == 1
    assert total(during, "codegend_retries_total", reason="rate_limit") == 1  # DB's 429
    calls = "codegend_model_call_seconds_count"
    assert total(during, calls, phase="DB", outcome="failed") == 1
    assert total(during, calls, phase="DB", outcome="answered") == 1
    assert total(during, "codegend_tokens_total", kind="output") > 0

    assert phases_done(after) == len(PHASE_NAMES)
    assert total(after, "codegend_jobs") == 1
    assert total(after, "codegend_tokens_total") > total(during, "codegend_tokens_total")
    assert total(after, "codegend_retries_total", reason="rate_limit") == 1
    assert total(after, "codegend_retries_total", reason="server") == 0
    # one call per phase; VERIFY calls the model only for a repair, and this project has none
    assert total(after, calls, outcome="answered") == len(PHASE_NAMES) - 1
    for kind in ("input", "output", "cache_read"):
        assert total(after, "codegend_tokens_total", kind=kind) > 0, kind
    assert total(after, "codegend_requests_total", outcome="accepted") == 1
    # job.accepted, job.completed, a phase.started and a phase.completed per phase
    assert total(after, "codegend_events_published_total") >= 2 + 2 * len(PHASE_NAMES)
    lag = {dict(labels)["partition"]: v for (n, labels), v in after.items() if n.endswith("_lag")}
    assert lag and set(lag.values()) == {0}  # the request was read


async def test_consumer_lag_counts_the_requests_intake_holds_back(make_settings, gate):
    settings = make_settings(jobs={"max_unfinished": 1}, kafka={"topic_partitions": 1})
    async with running(settings) as daemon:
        port = daemon.metrics_port
        assert port is not None
        await produce(settings, request_bytes(request_id="first"), request_bytes(request_id="next"))
        held = await scrape_when(port, lambda s: phases_done(s) == DONE_BEFORE_HELD)
        gate.set()
        done = await scrape_when(port, lambda s: total(s, "codegend_jobs", state="COMPLETED") == 2)
    assert total(held, "codegend_consumer_lag", partition="0") == 1  # paused at "next"
    assert total(held, "codegend_jobs") == 1  # "next" is not a job yet
    assert total(done, "codegend_consumer_lag", partition="0") == 0
    assert total(done, "codegend_requests_total", outcome="accepted") == 2


async def test_readiness_follows_the_broker(make_settings, proxied_broker):
    servers, proxy = proxied_broker
    settings = make_settings(kafka={"bootstrap_servers": servers})
    async with running(settings) as daemon:
        port = daemon.metrics_port
        assert port is not None
        assert await get(port, "/readyz") == (200, "ready\n")
        await asyncio.to_thread(proxy.cut)
        status, reason = await get(port, "/readyz")
        assert status == 503 and reason.startswith("broker: "), reason
        assert await get(port, "/healthz") == (200, "ok\n")  # alive all the same
        await asyncio.to_thread(proxy.restore)
        async with asyncio.timeout(10):
            while (await get(port, "/readyz"))[0] != 200:
                await asyncio.sleep(0.1)
