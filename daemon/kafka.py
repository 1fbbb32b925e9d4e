"""Kafka clients built from settings: connection and security options, producer, consumer."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from daemon.errors import ConfigError
from daemon.settings import KafkaSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Options shared by every client besides the brokers' address: who it is, how it
    authenticates. They are the keyword arguments of AIOKafkaProducer, AIOKafkaConsumer and
    AIOKafkaAdminClient alike; SCRAM takes its credentials in the ``sasl_plain_*`` ones too.
    A setting that cannot work (a missing CA file, SASL without credentials, TLS or SASL
    settings under a protocol that ignores them) raises ConfigError naming the key."""
    _check_security(kafka)
    options: dict[str, Any] = {
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A context that verifies the brokers (against ``ssl_cafile``, else the system's CAs)
    and checks their host names; with ``ssl_certfile`` it also presents a client certificate."""
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"kafka.{key}: no file at {path}")
    if kafka.ssl_keyfile and not kafka.ssl_certfile:
        raise ConfigError("kafka.ssl_keyfile is set without kafka.ssl_certfile")
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=kafka.ssl_cafile or None,
            certfile=kafka.ssl_certfile or None,
            keyfile=kafka.ssl_keyfile or None,
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"kafka.ssl_cafile / ssl_certfile / ssl_keyfile: not usable PEM files ({exc})"
        ) from None
    return context


def _check_security(kafka: KafkaSettings) -> None:
    protocol = kafka.security_protocol
    if protocol in SASL_PROTOCOLS:
        if not kafka.sasl_username or not kafka.sasl_password.get_secret_value():
            raise ConfigError(
                f"kafka.security_protocol is {protocol}: set kafka.sasl_username and "
                "kafka.sasl_password (CODEGEND_KAFKA__SASL_PASSWORD)"
            )
    elif kafka.sasl_mechanism:
        raise ConfigError(
            f"kafka.sasl_mechanism is {kafka.sasl_mechanism} but kafka.security_protocol is "
            f"{protocol}; allowed with SASL: SASL_PLAINTEXT or SASL_SSL"
        )
    if protocol not in TLS_PROTOCOLS:
        tls = [key for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(kafka, key)]
        if tls:
            raise ConfigError(
                f"kafka.{tls[0]} is set but kafka.security_protocol is {protocol}; "
                "allowed with TLS: SSL or SASL_SSL"
            )


def make_producer(kafka: KafkaSettings, bootstrap_servers: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        acks="all" if kafka.acks == "all" else int(kafka.acks),
        enable_idempotence=kafka.enable_idempotence,
        max_request_size=kafka.max_publish_bytes,
        linger_ms=2,
    )


def make_consumer(kafka: KafkaSettings, bootstrap_servers: str) -> AIOKafkaConsumer:
    """The requests consumer: in the daemons' group, committing by hand."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        max_partition_fetch_bytes=kafka.max_request_bytes + 64 * 1024,
        fetch_max_bytes=max(52_428_800, kafka.max_request_bytes + 64 * 1024),
    )


def group_generation(consumer: AIOKafkaConsumer) -> int:
    """The consumer group generation of the consumer's current assignment; -1 when not
    known. aiokafka keeps it in an internal attribute (``consumer._coordinator.generation``,
    set from the JoinGroup answer): this is the only place that reads it."""
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", -1)
    return generation if isinstance(generation, int) else -1
