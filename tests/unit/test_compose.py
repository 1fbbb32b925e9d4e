"""docker-compose.yml: Apache Kafka in KRaft mode with a healthcheck, the topics created
before the daemon starts, the daemon built here with its store on a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_the_three_services_and_two_more_daemons_in_the_cluster_profile(compose):
    services = compose["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == {
        "kafka",
        "kafka-init",
        "codegend",
    }
    members = ["codegend", "codegend-2", "codegend-3"]
    assert all(services[n].get("profiles", ["cluster"]) == ["cluster"] for n in members[1:])
    # one group, a store and a metrics port of each member's own
    assert len({services[n]["volumes"][0].split(":")[0] for n in members}) == 3
    assert len({services[n]["ports"][0] for n in members}) == 3
    assert {services[n]["environment"]["CODEGEND_KAFKA__BOOTSTRAP_SERVERS"] for n in members} == {
        "kafka:29092"
    }


def test_the_cluster_topics_are_made_with_the_requests_topics_partitions(compose):
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    defaults = KafkaSettings(bootstrap_servers="kafka:29092")
    assert f"--topic {defaults.changelog_topic} --partitions 3" in script
    assert "cleanup.policy=compact" in script
    assert f"max.message.bytes={defaults.changelog_max_bytes + 64 * 1024}" in script
    assert f"--topic {defaults.commands_topic} --partitions 3" in script


def test_kafka_runs_kraft_with_a_healthcheck(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in environment["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in environment
    healthcheck = kafka["healthcheck"]
    assert healthcheck["test"][0] in ("CMD", "CMD-SHELL") and healthcheck["retries"] >= 1
    # phase.completed events carry file contents: the broker must take what codegend sends.
    assert int(environment["KAFKA_MESSAGE_MAX_BYTES"]) >= KafkaSettings().max_publish_bytes


def test_the_topics_are_created_once_kafka_is_healthy(compose):
    init = compose["services"]["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = "\n".join(init["command"])
    defaults = KafkaSettings()
    for topic in (defaults.requests_topic, defaults.events_topic, defaults.dead_letter_topic):
        assert topic in script
    assert f"max.message.bytes={defaults.max_publish_bytes}" in script


def test_the_daemon_is_built_here_and_keeps_its_store_on_a_volume(compose):
    daemon = compose["services"]["codegend"]
    assert daemon["build"] == "." or daemon["build"]["context"] == "."
    assert daemon["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    environment = daemon["environment"]
    assert environment["CODEGEND_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:29092"
    store_dir = str(Path(environment["CODEGEND_STORE__PATH"]).parent)
    source_by_target = {
        target: source for source, target, *_ in (v.split(":") for v in daemon["volumes"])
    }
    assert store_dir in source_by_target, f"no volume at {store_dir}"
    assert source_by_target[store_dir] in compose["volumes"]  # a named volume, not the image
    assert "${ANTHROPIC_API_KEY" in environment["ANTHROPIC_API_KEY"]
