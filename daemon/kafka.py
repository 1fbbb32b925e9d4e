"""Kafka clients built from settings: connection and security options, producer, consumer."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from daemon.settings import KafkaSettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Options shared by every client besides the brokers' address: who it is, how it
    authenticates."""
    options: dict[str, Any] = {
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile or None,
            certfile=kafka.ssl_certfile or None,
            keyfile=kafka.ssl_keyfile or None,
        )
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def make_producer(kafka: KafkaSettings, bootstrap_servers: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        acks="all" if kafka.acks == "all" else int(kafka.acks),
        enable_idempotence=kafka.enable_idempotence,
        max_request_size=kafka.max_publish_bytes,
        linger_ms=2,
    )


def make_consumer(kafka: KafkaSettings, bootstrap_servers: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_partition_fetch_bytes=kafka.max_request_bytes + 64 * 1024,
        fetch_max_bytes=max(52_428_800, kafka.max_request_bytes + 64 * 1024),
    )
