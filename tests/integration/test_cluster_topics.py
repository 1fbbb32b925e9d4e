"""The topics of cluster mode on the real test broker: created with the requests topic's
partition count and their configuration, refused when their count differs, and what tansu
does with a compacted topic (docs/cluster-design.md, section 9)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from daemon.errors import ConfigError
from daemon.settings import Settings
from daemon.topics import TOPIC_HEADROOM_BYTES, ensure_daemon_topics, ensure_topics
from tests.support.daemons import running


@pytest.fixture
def settings(make_settings, topic_names) -> Settings:
    suffix = topic_names.suffix
    return make_settings(
        kafka={
            "changelog_topic": f"codegend-changelog-{suffix}",
            "commands_topic": f"codegend-commands-{suffix}",
            "topic_partitions": 3,
        }
    )


async def _described(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's partition count and the configuration the broker reports for it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    configs = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for answer in answers
        for resource in answer.resources
    }
    return {name: (counts[name], configs[name]) for name in topics}


async def test_the_cluster_topics_take_the_requests_topics_count_and_their_configs(settings):
    kafka = settings.kafka
    # an operator made the requests topic with 2 partitions; topic_partitions says 3
    await ensure_topics(kafka.bootstrap_servers, [kafka.requests_topic], 2)
    await ensure_daemon_topics(kafka, kafka.bootstrap_servers)
    await ensure_daemon_topics(kafka, kafka.bootstrap_servers)  # all there: a no-op
    found = await _described(kafka.bootstrap_servers, kafka.cluster_topics())
    # tansu accepts the compaction settings at creation and reports them back as given
    # (and only those: DescribeConfigs lists no broker defaults)
    assert found[kafka.changelog_topic] == (
        2,
        {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "3600000",
            "max.message.bytes": str(kafka.changelog_max_bytes + TOPIC_HEADROOM_BYTES),
        },
    )
    assert found[kafka.commands_topic] == (
        2,
        {"cleanup.policy": "delete", "retention.ms": "604800000"},
    )


async def test_a_changelog_with_another_partition_count_is_refused(settings):
    kafka = settings.kafka
    await ensure_topics(kafka.bootstrap_servers, [kafka.changelog_topic], 1)
    with pytest.raises(ConfigError) as caught:
        await ensure_daemon_topics(kafka, kafka.bootstrap_servers)
    message = str(caught.value)
    assert "\n" not in message
    for named in (
        f"{kafka.requests_topic!r} has 3",
        f"{kafka.changelog_topic!r} 1",
        f"{kafka.commands_topic!r} 3",
    ):
        assert named in message


async def test_tansu_keeps_every_record_of_a_compacted_topic(settings):
    """tansu's memory engine does not compact, and takes what Kafka refuses on a compacted
    topic (a record without a key): the daemon may not count on either."""
    kafka = settings.kafka
    await ensure_daemon_topics(kafka, kafka.bootstrap_servers)
    sent = [(b"shop-1", b"1"), (b"shop-1", b"2"), (None, b"keyless"), (b"shop-1", None)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(kafka.changelog_topic, value, key=key, partition=1)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(kafka.changelog_topic, 1)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records = (await consumer.getmany(tp, timeout_ms=5000, max_records=10))[tp]
    finally:
        await consumer.stop()
    assert [(r.offset, r.key, r.value) for r in records] == [
        (offset, key, value) for offset, (key, value) in enumerate(sent)
    ]


async def test_the_daemon_creates_the_cluster_topics_and_refuses_another_count(
    settings, make_settings
):
    kafka = settings.kafka
    async with running(settings):
        pass
    topics = [kafka.requests_topic, *kafka.cluster_topics()]
    found = await _described(kafka.bootstrap_servers, topics)
    assert [count for count, _ in found.values()] == [3, 3, 3]
    # a requests topic of 1 partition beside the changelog of 3: the daemon does not start
    one = f"{kafka.requests_topic}-one"
    await ensure_topics(kafka.bootstrap_servers, [one], 1)
    cluster = {"changelog_topic": kafka.changelog_topic, "commands_topic": kafka.commands_topic}
    with pytest.raises(ConfigError, match="partition counts differ"):
        async with running(make_settings(kafka={"requests_topic": one, **cluster})):
            pass
