"""Topic set-up: codegend's topics created where missing, sized for its largest messages."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from daemon.errors import BrokerError
from daemon.settings import KafkaSettings

log = logging.getLogger(__name__)

# Room above the largest message for the record batch's own bytes (headers, key, framing).
TOPIC_HEADROOM_BYTES = 64 * 1024
TOPICS_POLL_S = 0.1


def topic_configs(kafka: KafkaSettings) -> dict[str, dict[str, str]]:
    """The configuration of each topic codegend creates: a ``max.message.bytes`` that lets
    through the largest message codegend sends there or accepts from there (Kafka's default
    is about 1 MB; an event carrying a phase's files can be up to kafka.max_publish_bytes)."""
    requests = str(kafka.max_request_bytes + TOPIC_HEADROOM_BYTES)
    return {
        kafka.requests_topic: {"max.message.bytes": requests},
        kafka.events_topic: {
            "max.message.bytes": str(kafka.max_publish_bytes + TOPIC_HEADROOM_BYTES)
        },
        # a dead letter is a request (cut to dead_letter_max_bytes) with its headers
        kafka.dead_letter_topic: {"max.message.bytes": requests},
    }


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int,
    *,
    timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
    **client_kwargs: Any,
) -> None:
    """Create those of `topics` that are missing, with `partitions` partitions each and
    the topic configuration `configs` gives for their name.

    An existing topic is left as it is. If the broker refuses to create one, a warning is
    logged and we go on. Returns once every topic shows in the metadata with partitions;
    raises `BrokerError` if that takes longer than `timeout` seconds.
    `client_kwargs` go to `AIOKafkaAdminClient` (security settings, timeouts...).
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await _create_topics(admin, missing, partitions, configs or {})
        await _wait_for_topics(admin, wanted, partitions, timeout)
    finally:
        await admin.close()


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
    admin: AIOKafkaAdminClient, names: list[str], partitions: int, timeout: float
) -> None:
    """Wait until every topic in `names` has metadata with at least one partition.

    `list_topics` asks for all topics, so (unlike a metadata request naming a topic) it
    never makes the broker auto-create one.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        pending = await _topics_without_metadata(admin, pending, partitions)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"no metadata for topics {pending} after {timeout}s")
        await asyncio.sleep(TOPICS_POLL_S)


async def _topics_without_metadata(
    admin: AIOKafkaAdminClient, names: list[str], partitions: int
) -> list[str]:
    """Those of `names` that the broker does not yet list with partitions."""
    listed = set(await admin.list_topics())
    present = [name for name in names if name in listed]
    ready: set[str] = set()
    if present:
        for meta in await admin.describe_topics(present):
            if meta["error_code"] == 0 and meta["partitions"]:
                ready.add(meta["topic"])
                _warn_on_partition_count(meta["topic"], len(meta["partitions"]), partitions)
    return [name for name in names if name not in ready]


def _warn_on_partition_count(name: str, actual: int, wanted: int) -> None:
    """A topic that already existed may have another partition count: say so."""
    if actual != wanted:
        log.warning("topic %r has %d partitions, not the %d asked for", name, actual, wanted)
