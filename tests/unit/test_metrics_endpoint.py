"""The metrics registry and the health endpoint's HTTP, without a daemon around them."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from prometheus_client.parser import text_string_to_metric_families

from daemon.contract import Usage
from daemon.errors import ConfigError
from daemon.kafka import make_consumer
from daemon.metrics import HealthServer, Metrics
from daemon.ratelimit import RateLimiter
from daemon.settings import KafkaSettings, MetricsSettings

LOOPBACK = MetricsSettings(host="127.0.0.1", port=0)


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".encode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def serve(metrics: Metrics, reason: str | None = None) -> HealthServer:
    async def not_ready() -> str | None:
        return reason

    server = HealthServer(metrics, not_ready)
    await server.start(LOOPBACK)
    return server


def test_two_daemons_metrics_do_not_collide():
    first, second = Metrics(), Metrics()
    first.retry("repair")
    first.call_answered("ARCH", 0.0, Usage(input_tokens=7, output_tokens=3))
    assert first.registry.get_sample_value("codegend_retries_total", {"reason": "repair"}) == 1
    assert second.registry.get_sample_value("codegend_retries_total", {"reason": "repair"}) == 0
    assert first.registry.get_sample_value("codegend_tokens_total", {"kind": "input"}) == 7
    count = first.registry.get_sample_value(
        "codegend_model_call_seconds_count", {"phase": "ARCH", "outcome": "answered"}
    )
    assert count == 1


async def test_the_group_size_and_the_rate_share_are_read_at_each_scrape(store):
    metrics, limiter = Metrics(), RateLimiter(requests_per_min=60)
    consumer = make_consumer(KafkaSettings(), "127.0.0.1:9")
    try:
        value = metrics.registry.get_sample_value
        assert (value("codegend_group_members"), value("codegend_rate_share")) == (0, 0)
        metrics.watch(store, consumer, limiter)
        assert (value("codegend_group_members"), value("codegend_rate_share")) == (0, 1)
        assignor = consumer._partition_assignment_strategy[0]
        assignor.on_assignment(ConsumerProtocolMemberAssignment(0, [], b'{"members": 3}'))
        limiter.set_share(1 / 3)
        assert value("codegend_group_members") == 3
        assert value("codegend_rate_share") == pytest.approx(1 / 3)
    finally:
        await consumer.stop()


async def test_metrics_are_served_in_the_text_format():
    metrics = Metrics()
    metrics.retry("rate_limit")
    server = await serve(metrics)
    try:
        answer = await request(server.port, get("/metrics?x=1"))
    finally:
        await server.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=" in head
    assert f"Content-Length: {len(body)}".encode() in head
    values = samples(body.decode())
    assert values[("codegend_retries_total", frozenset({("reason", "rate_limit")}))] == 1
    assert values[("codegend_retries_total", frozenset({("reason", "continuation")}))] == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/healthz"), b"200 OK"),
        (get("/readyz"), b"503 Service Unavailable"),
        (get("/nowhere"), b"404 Not Found"),
        (get("/metrics", "POST"), b"405 Method Not Allowed"),
    ],
)
async def test_each_path_answers_with_its_status(raw, status):
    server = await serve(Metrics(), reason="broker: unreachable")
    try:
        answer = await request(server.port, raw)
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n")
    if status.startswith(b"503"):
        assert answer.endswith(b"\r\n\r\nbroker: unreachable\n")


async def test_head_has_the_length_and_no_body_and_junk_gets_no_answer():
    server = await serve(Metrics())
    try:
        head = await request(server.port, get("/healthz", "HEAD"))
        junk = await request(server.port, b"\x16\x03\x01 not http\r\n\r\n")
    finally:
        await server.close()
    assert head.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\n")
    assert junk == b""


async def test_a_port_in_use_names_the_keys():
    first = await serve(Metrics())
    try:
        with pytest.raises(ConfigError, match="metrics.port: cannot listen on 127.0.0.1:"):
            await HealthServer(Metrics(), first._not_ready).start(
                MetricsSettings(host="127.0.0.1", port=first.port)
            )
    finally:
        await first.close()
