"""The topics codegend creates and their configuration, with cluster mode off (the default)
and on; the settings cluster mode refuses."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.errors import ConfigError
from daemon.settings import KafkaSettings, load_settings
from daemon.topics import COMMANDS_RETENTION_MS, TOPIC_HEADROOM_BYTES, topic_configs

BROKER = "broker:9092"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("CODEGEND_"):
            monkeypatch.delenv(name)


def cluster(**values: Any) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=BROKER, changelog_topic="codegen.changelog", **values)


def test_cluster_mode_is_on_by_default_against_a_broker_and_off_with_no_changelog():
    assert KafkaSettings(bootstrap_servers=BROKER).cluster_mode
    assert KafkaSettings(bootstrap_servers=BROKER).changelog_topic == "codegen.changelog"
    kafka = KafkaSettings(bootstrap_servers=BROKER, changelog_topic="")
    assert not kafka.cluster_mode
    assert kafka.cluster_topics() == []
    assert list(topic_configs(kafka)) == [
        kafka.requests_topic,
        kafka.events_topic,
        kafka.dead_letter_topic,
    ]


def test_the_embedded_broker_never_runs_cluster_mode():
    kafka = KafkaSettings(changelog_topic="codegen.changelog")
    assert kafka.bootstrap_servers == "embedded"
    assert not kafka.cluster_mode
    assert kafka.changelog_topic not in topic_configs(kafka)


def test_the_changelog_is_compacted_kept_uncompacted_for_the_lag_and_takes_any_record():
    kafka = cluster(changelog_min_compaction_lag_ms=7_200_000, max_publish_bytes=9_000_000)
    assert kafka.cluster_topics() == ["codegen.changelog", "codegen.commands"]
    # a record holds a file as large as an event may be, or a request intake takes
    assert kafka.changelog_max_bytes == 9_000_000 + 64 * 1024
    assert topic_configs(kafka)["codegen.changelog"] == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "7200000",
        "max.message.bytes": str(kafka.changelog_max_bytes + TOPIC_HEADROOM_BYTES),
    }
    # events capped lower than requests: the changelog still takes any request
    small_events = cluster(max_publish_bytes=2048)
    assert small_events.changelog_max_bytes == small_events.max_request_bytes + 64 * 1024


def test_the_commands_topic_keeps_a_week_of_commands():
    configs = topic_configs(cluster(commands_topic="ops.commands"))
    assert configs["ops.commands"] == {
        "cleanup.policy": "delete",
        "retention.ms": str(COMMANDS_RETENTION_MS),
    }
    assert COMMANDS_RETENTION_MS == 604_800_000


def test_the_defaults_of_the_cluster_settings():
    kafka = KafkaSettings()
    assert (kafka.commands_topic, kafka.changelog_min_compaction_lag_ms) == (
        "codegen.commands",
        3_600_000,
    )
    assert (kafka.restore_timeout_s, kafka.transactions) == (120.0, False)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"changelog_topic": "codegen.events"}, "must differ"),
        ({"changelog_topic": "x", "commands_topic": "x"}, "must differ"),
        ({"changelog_topic": "x", "commands_topic": "codegen.requests"}, "must differ"),
        (
            {"transactions": True, "changelog_topic": ""},
            "kafka.transactions = true needs cluster mode",
        ),
        (
            {"transactions": True, "changelog_topic": "x", "bootstrap_servers": "embedded"},
            "needs cluster mode",
        ),
        (
            {"transactions": True, "changelog_topic": "x", "acks": "1"},
            'needs kafka.acks = "all", not "1"',
        ),
        ({"commands_topic": ""}, "kafka.commands_topic: String should have at least 1"),
        ({"restore_timeout_s": 0}, "kafka.restore_timeout_s: Input should be greater than 0"),
        ({"changelog_min_compaction_lag_ms": -1}, "kafka.changelog_min_compaction_lag_ms"),
    ],
)
def test_settings_cluster_mode_cannot_work_with_are_refused(values, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(kafka={"bootstrap_servers": BROKER, **values})
    assert message in str(caught.value)


def test_transactions_are_refused_until_they_are_built():
    # everything else they need is there: cluster mode on a Kafka cluster, acks = "all"
    with pytest.raises(ConfigError, match="kafka.transactions = true is not supported yet"):
        load_settings(
            kafka={"bootstrap_servers": BROKER, "changelog_topic": "x", "transactions": True}
        )
