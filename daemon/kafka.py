"""Kafka clients built from settings: connection and security options, producer, consumer;
the consumer's assignor, and what the group told this member (its size, its generation)."""

from __future__ import annotations

import json
import ssl
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.helpers import create_ssl_context

from daemon.errors import ConfigError
from daemon.settings import KafkaSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
MEMBERS_KEY = "members"  # of the JSON the leader's CodegendAssignor puts in the assignments
# each consumer of make_consumer -> its assignor, without keeping the consumer alive
_assignors: weakref.WeakKeyDictionary[AIOKafkaConsumer, CodegendAssignor] = (
    weakref.WeakKeyDictionary()
)


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


def make_producer(
    kafka: KafkaSettings, bootstrap_servers: str, max_request_size: int | None = None
) -> AIOKafkaProducer:
    """A producer of the daemon's settings; its records are at most ``max_request_size``
    bytes (default kafka.max_publish_bytes, the events' limit)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        acks="all" if kafka.acks == "all" else int(kafka.acks),
        enable_idempotence=kafka.enable_idempotence,
        max_request_size=max_request_size or kafka.max_publish_bytes,
        linger_ms=2,
    )


def make_changelog_reader(
    kafka: KafkaSettings, bootstrap_servers: str, fetch_max_wait_ms: int
) -> AIOKafkaConsumer:
    """A consumer of no group that reads changelog partitions from their beginning, with
    room for the largest record the writer sends (a file, a request)."""
    fetch_bytes = kafka.changelog_max_bytes + 128 * 1024
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=max(52_428_800, fetch_bytes),
    )


def make_consumer(kafka: KafkaSettings, bootstrap_servers: str) -> AIOKafkaConsumer:
    """The requests consumer: in the daemons' group, committing by hand, assigning with a
    CodegendAssignor of its own (round robin while a member without one is in the group)."""
    assignor = CodegendAssignor()
    consumer = AIOKafkaConsumer(
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
        partition_assignment_strategy=(assignor, RoundRobinPartitionAssignor),
    )
    own = weakref.ref(consumer)
    assignor.generation_of = lambda: -1 if (member := own()) is None else group_generation(member)
    _assignors[consumer] = assignor
    return consumer


def group_members(consumer: AIOKafkaConsumer) -> int:
    """How many members the consumer's group had at its last assignment, as the group
    leader's CodegendAssignor counted them; 0 when unknown (not joined yet, a rebalance under
    way, the group assigning by round robin, a consumer not from make_consumer)."""
    assignor = _assignors.get(consumer)
    return assignor.members if assignor is not None else 0


def group_generation(consumer: AIOKafkaConsumer) -> int:
    """The consumer's group generation, -1 when it has none (not started, not joined yet,
    or reset by the coordinator after an IllegalGeneration or UnknownMemberId).

    aiokafka has no public API for it: this reads its internal ``consumer._coordinator.
    generation`` (aiokafka 0.14.0, set from the JoinGroup response), and is the only place
    that does; tests/integration/test_assignor.py fails if an upgrade moves it."""
    generation = getattr(getattr(consumer, "_coordinator", None), "generation", -1)
    return generation if isinstance(generation, int) else -1


class CodegendAssignor(StickyPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's sticky assignor (a rebalance moves only the partitions of the members that
    left or joined) that also tells each member the size of the group: the leader's ``assign``
    puts ``{"members": N}`` in every assignment's ``user_data`` (the sticky assignor's own
    user_data, the member's previous assignment, travels in the JoinGroup metadata and leaves
    the assignment's empty), and ``on_assignment`` keeps N in ``members``.

    One instance per consumer, with its state on the instance. aiokafka calls the objects of
    ``partition_assignment_strategy`` as they are (``name``, ``metadata``, ``assign``,
    ``on_assignment``) and never instantiates them; the sticky assignor's methods are
    classmethods that keep the member's previous assignment on the class, which every consumer
    of the process would share. aiokafka also never calls ``on_generation_assignment``, so the
    sticky assignor would report generation -1 with every assignment and could not tell a
    stale claim from a current one: ``on_assignment`` reads the generation itself, through
    ``generation_of``, which make_consumer sets."""

    name = "codegend-sticky"

    def __init__(self) -> None:
        self.members = 0
        self.member_assignment: list[TopicPartition] | None = None
        self.generation: int = self.DEFAULT_GENERATION_ID
        self.generation_of: Callable[[], int] = lambda: self.DEFAULT_GENERATION_ID

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        sticky: dict[str, ConsumerProtocolMemberAssignment] = super().assign(cluster, members)
        user_data = json.dumps({MEMBERS_KEY: len(members)}).encode()
        return {
            member: ConsumerProtocolMemberAssignment(
                assignment.version,
                assignment.assignment,
                # should a later sticky assignor send user_data of its own, it wins: the
                # count is only for a gauge, the stickiness is for every rebalance
                assignment.user_data or user_data,
            )
            for member, assignment in sticky.items()
        }

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        self.members = 0  # a join starts: unknown until this assignor gets the assignment
        return self._metadata(topics, self.member_assignment, self.generation)

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.member_assignment = assignment.partitions()
        self.generation = self.generation_of()
        self.members = _members_in(assignment.user_data)

    def on_generation_assignment(self, generation: int) -> None:
        self.generation = generation


def _members_in(user_data: bytes | None) -> int:
    """N of ``{"members": N}``; 0 for anything else (a broker that dropped the user_data)."""
    try:
        members = json.loads(user_data or b"")[MEMBERS_KEY]
    except (ValueError, TypeError, KeyError):
        return 0
    return members if type(members) is int and members > 0 else 0
