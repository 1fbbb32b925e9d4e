"""Shared fixtures: one Kafka-protocol broker for the whole session, unique topic names per
test, a broker of its own behind a proxy, the local Messages API server, and the settings of
a daemon in-process on all of them (the integration and hostile tiers run theirs so).

Set ``CODEGEND_TEST_BOOTSTRAP=host:port`` to run against a broker you started yourself;
otherwise an embedded tansu is started on a free 127.0.0.1 port and stopped at the end.

The broker fixture is synchronous on purpose: the tansu child is a plain process started
from a private event loop, so it belongs to no test's loop and every function-scoped loop
(asyncio_default_fixture_loop_scope = "function") can talk to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemon.broker import EmbeddedBroker, free_port
from daemon.settings import Settings, load_settings
from tests.support.messages_server import MessagesServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.topics import BOOTSTRAP_ENV, TopicNames


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


@pytest.fixture
def messages_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesServer]:
    """The local Messages API server, and the SDK's environment pointing at it."""
    with MessagesServer() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged")
        yield server


@pytest.fixture
def make_settings(
    tmp_path, kafka_bootstrap, topic_names, messages_server
) -> Callable[..., Settings]:
    """``make(section={key: value})``: this test's topics, store and output folder, the
    session's broker and the local Messages API server, with the sections given merged in."""

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "requests_topic": topic_names.requests,
                "events_topic": topic_names.events,
                "dead_letter_topic": topic_names.dlq,
                # cluster mode is on by default against a broker: this test's own topics
                "changelog_topic": topic_names.changelog,
                "commands_topic": topic_names.commands,
                "group_id": f"codegend-{topic_names.suffix}",
                "topic_partitions": 2,
                # tansu holds a group's join for half the session timeout: keep it short
                # (real Kafka wants >= 6000, see group.min.session.timeout.ms).
                "session_timeout_ms": 6000 if os.environ.get(BOOTSTRAP_ENV) else 2000,
                "heartbeat_interval_ms": 500,
            },
            "store": {"path": tmp_path / "codegend.db"},
            "llm": {"provider": "anthropic", "timeout_s": 20},
            # CODEGEND_TEST_EXECUTION=parallel runs the same tests in parallel mode.
            "jobs": {
                "shutdown_grace_s": 10,
                "execution": os.environ.get("CODEGEND_TEST_EXECUTION", "sequential"),
            },
            "output": {"dir": tmp_path / "out"},
            "metrics": {"port": 0},  # a free port: daemons side by side do not collide
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return load_settings(**base)

    return make
