"""Topic set-up: codegend's topics created where missing, sized for its largest messages."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from daemon.errors import BrokerError, ConfigError
from daemon.kafka import client_options
from daemon.settings import KafkaSettings

log = logging.getLogger(__name__)

# Room above the largest message for the record batch's own bytes (headers, key, framing).
TOPIC_HEADROOM_BYTES = 64 * 1024
TOPICS_POLL_S = 0.1
# The commands topic keeps remote cancel/resume commands and their replies this long.
COMMANDS_RETENTION_MS = 7 * 24 * 3600 * 1000


def topic_configs(kafka: KafkaSettings) -> dict[str, dict[str, str]]:
    """The configuration of each topic codegend creates: a ``max.message.bytes`` that lets
    through the largest message codegend sends there or accepts from there (Kafka's default
    is about 1 MB; an event carrying a phase's files can be up to kafka.max_publish_bytes).

    In cluster mode also the changelog, compacted (the latest record of each key is the
    state) and kept uncompacted for kafka.changelog_min_compaction_lag_ms, and the commands
    topic, kept for COMMANDS_RETENTION_MS."""
    requests = str(kafka.max_request_bytes + TOPIC_HEADROOM_BYTES)
    publish = str(kafka.max_publish_bytes + TOPIC_HEADROOM_BYTES)
    configs = {
        kafka.requests_topic: {"max.message.bytes": requests},
        kafka.events_topic: {"max.message.bytes": publish},
        # a dead letter is a request (cut to dead_letter_max_bytes) with its headers
        kafka.dead_letter_topic: {"max.message.bytes": requests},
    }
    if kafka.cluster_mode:
        # a file record can be as large as a file, a request record as large as a request
        configs[kafka.changelog_topic] = {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": str(kafka.changelog_min_compaction_lag_ms),
            "max.message.bytes": str(kafka.changelog_max_bytes + TOPIC_HEADROOM_BYTES),
        }
        configs[kafka.commands_topic] = {
            "cleanup.policy": "delete",
            "retention.ms": str(COMMANDS_RETENTION_MS),
        }
    return configs


async def ensure_daemon_topics(kafka: KafkaSettings, bootstrap_servers: str) -> None:
    """The daemon's topics at start: requests, events and dead letters with
    kafka.topic_partitions; in cluster mode the changelog and commands topics with the
    requests topic's partition count (ConfigError if one exists with another)."""
    await ensure_topics(
        bootstrap_servers,
        [kafka.requests_topic, kafka.events_topic, kafka.dead_letter_topic],
        kafka.topic_partitions,
        configs=topic_configs(kafka),
        copartitioned=kafka.cluster_topics(),
        **client_options(kafka),
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int,
    *,
    timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
    copartitioned: list[str] | None = None,
    **client_kwargs: Any,
) -> None:
    """Create those of `topics` that are missing, with `partitions` partitions each and
    the topic configuration `configs` gives for their name.

    An existing topic is left as it is. If the broker refuses to create one, a warning is
    logged and we go on. Returns once every topic shows in the metadata with partitions;
    raises `BrokerError` if that takes longer than `timeout` seconds.
    `copartitioned` topics are then created the same way with the partition count
    `topics[0]` has on the broker (whoever created it); `ConfigError` if one of them exists
    with another count.
    `client_kwargs` go to `AIOKafkaAdminClient` (security settings, timeouts...).
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        counts = await _ensure(admin, wanted, existing, partitions, configs or {}, timeout)
        for name in wanted:
            _warn_on_partition_count(name, counts[name], partitions)
        if copartitioned:
            count = counts[wanted[0]]
            followers = list(dict.fromkeys(copartitioned))
            counts = await _ensure(admin, followers, existing, count, configs or {}, timeout)
            _check_copartitioned(wanted[0], count, counts)
    finally:
        await admin.close()


async def _ensure(
    admin: AIOKafkaAdminClient,
    names: list[str],
    existing: set[str],
    partitions: int,
    configs: dict[str, dict[str, str]],
    timeout: float,
) -> dict[str, int]:
    """Create those of `names` not in `existing`; the partition count of each, once listed."""
    missing = [name for name in names if name not in existing]
    if missing:
        await _create_topics(admin, missing, partitions, configs)
    return await _wait_for_topics(admin, names, timeout)


async def _create_topics(
    admin: AIOKafkaAdminClient,
    names: list[str],
    partitions: int,
    configs: dict[str, dict[str, str]],
) -> None:
    """One CreateTopics request; already-existing topics are fine, refusals are warnings."""
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            topic_configs=configs.get(name, {}),
        )
        for name in names
    ]
    try:
        response = await admin.create_topics(new)
    except KafkaError as exc:
        log.warning("broker refused to create topics %s: %r", names, exc)
        return
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        message = entry[2] if len(entry) > 2 else None
        log.warning("could not create topic %r: %s %s", name, for_code(code).__name__, message)


async def _wait_for_topics(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float
) -> dict[str, int]:
    """Wait until every topic in `names` has metadata with at least one partition; the
    partition count of each.

    `list_topics` asks for all topics, so (unlike a metadata request naming a topic) it
    never makes the broker auto-create one.
    """
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while True:
        pending = [name for name in names if name not in counts]
        counts.update(await _partition_counts(admin, pending))
        if len(counts) == len(names):
            return counts
        if time.monotonic() >= deadline:
            missing = [name for name in names if name not in counts]
            raise BrokerError(f"no metadata for topics {missing} after {timeout}s")
        await asyncio.sleep(TOPICS_POLL_S)


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """The partition count of those of `names` that the broker lists with partitions."""
    listed = set(await admin.list_topics())
    present = [name for name in names if name in listed]
    if not present:
        return {}
    return {
        meta["topic"]: len(meta["partitions"])
        for meta in await admin.describe_topics(present)
        if meta["error_code"] == 0 and meta["partitions"]
    }


def _warn_on_partition_count(name: str, actual: int, wanted: int) -> None:
    """A topic that already existed may have another partition count: say so."""
    if actual != wanted:
        log.warning("topic %r has %d partitions, not the %d asked for", name, actual, wanted)


def _check_copartitioned(leader: str, count: int, counts: dict[str, int]) -> None:
    """Partition p of each copartitioned topic belongs with partition p of `leader`: the
    counts must be equal, now and for good."""
    if all(actual == count for actual in counts.values()):
        return
    listed = ", ".join(f"{name!r} {actual}" for name, actual in counts.items())
    raise ConfigError(
        f"partition counts differ: {leader!r} has {count}, {listed}; the topics must have "
        f"the same count (never add partitions to {leader!r})"
    )
