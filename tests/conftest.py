"""Shared fixtures: one Kafka-protocol broker for the whole session, unique topic names per test.

Set ``CODEGEND_TEST_BOOTSTRAP=host:port`` to run against a broker you started yourself;
otherwise an embedded tansu is started on a free 127.0.0.1 port and stopped at the end.

The broker fixture is synchronous on purpose: the tansu child is a plain process started
from a private event loop, so it belongs to no test's loop and every function-scoped loop
(asyncio_default_fixture_loop_scope = "function") can talk to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from daemon.broker import EmbeddedBroker, free_port
from tests.tcp_proxy import TcpProxy

BOOTSTRAP_ENV = "CODEGEND_TEST_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of the session's broker (``$CODEGEND_TEST_BOOTSTRAP`` or an embedded one)."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    broker = EmbeddedBroker()
    broker.start_sync()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop_sync()


@dataclass(frozen=True)
class TopicNames:
    """Topic names that no other test uses (they share one broker)."""

    suffix: str
    requests: str
    events: str
    dlq: str

    def all(self) -> list[str]:
        """The three names, requests first."""
        return [self.requests, self.events, self.dlq]


@pytest.fixture
def topic_names() -> TopicNames:
    """Fresh ``codegend-{requests,events,dlq}-<uuid>`` names for this test."""
    suffix = uuid.uuid4().hex[:12]
    return TopicNames(
        suffix=suffix,
        requests=f"codegend-requests-{suffix}",
        events=f"codegend-events-{suffix}",
        dlq=f"codegend-dlq-{suffix}",
    )


@pytest.fixture
def proxied_broker() -> Iterator[tuple[str, TcpProxy]]:
    """A broker of its own that advertises a proxy's address, so every connection of every
    client goes through the proxy."""
    proxy_port = free_port()
    broker = EmbeddedBroker(advertised_port=proxy_port)
    broker.start_sync()
    try:
        with TcpProxy(broker.port, proxy_port) as proxy:
            yield broker.bootstrap_servers, proxy
    finally:
        broker.stop_sync()
