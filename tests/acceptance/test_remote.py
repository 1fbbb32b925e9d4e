"""Remote operations where no daemon runs (the cluster tier has them with daemons): a
command nobody answers stays queued and the command says so in one line; a job the
changelog does not have, a topic that does not exist and ``--remote`` outside cluster
mode are one line each, with their exit code."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from daemon.topics import ensure_daemon_topics
from tests.acceptance.test_mistakes import the_error
from tests.support.processes import codegend, daemon_env, settings_from


@pytest.fixture
def nobody_home(tmp_path, kafka_bootstrap, topic_names):
    """Cluster mode's topics of this test, created, and no daemon; no store on this host."""
    variables = daemon_env(
        tmp_path,
        kafka_bootstrap,
        topic_names,
        "http://127.0.0.1:9",  # no model is called
        # cluster mode on this test's own topics
        CODEGEND_KAFKA__CHANGELOG_TOPIC=f"codegend-changelog-{topic_names.suffix}",
        CODEGEND_KAFKA__COMMANDS_TOPIC=f"codegend-commands-{topic_names.suffix}",
    )
    settings = settings_from(variables)
    asyncio.run(ensure_daemon_topics(settings.kafka, kafka_bootstrap))
    return variables, settings


def test_a_command_no_daemon_answers_stays_queued_and_says_where(nobody_home):
    variables, settings = nobody_home
    kafka = settings.kafka
    derived = f"{kafka.requests_topic}:1:0"  # a job id that names its partition
    cases = {
        # the wait is the subject: a second is enough to show that none came
        ("cancel", derived, "--wait", "1"): (
            1,
            f"error: queued on {kafka.commands_topic} partition 1; no daemon answered in 1 s; "
            "it applies when one owns the partition",
        ),
        ("resume", "--all", "--wait", "1"): (
            1,
            f"error: queued on {kafka.commands_topic} partitions 0, 1, 2; no daemon answered "
            "in 1 s; each applies when one owns its partition",
        ),
        ("cancel", "nobody"): (1, "error: no job 'nobody'"),
        ("status", "nobody"): (1, "error: no job 'nobody'"),
        ("export", "nobody", str(settings.store.path.parent / "x")): (1, "error: no job 'nobody'"),
        ("cancel", "--local", "nobody"): (1, f"error: no store at {settings.store.path}"),
    }
    elsewhere = {
        **variables,
        # a changelog no daemon created
        "CODEGEND_KAFKA__CHANGELOG_TOPIC": "codegend-changelog-none",
    }
    missing = (
        f"error: no topic codegend-changelog-none on {kafka.bootstrap_servers}: no daemon in "
        "cluster mode has run with these settings (kafka.changelog_topic, kafka.commands_topic)"
    )
    off = {**variables, "CODEGEND_KAFKA__CHANGELOG_TOPIC": ""}  # cluster mode off
    runs = {
        **{(args, "cluster"): (variables, args) for args in cases},
        (("status", "shop-1"), "none"): (elsewhere, ("status", "shop-1")),
        (("status", "--remote"), "off"): (off, ("status", "--remote")),
    }
    expected = {
        **{(args, "cluster"): want for args, want in cases.items()},
        (("status", "shop-1"), "none"): (1, missing),
        (("status", "--remote"), "off"): (
            2,
            "error: --remote needs cluster mode (kafka.changelog_topic set and a Kafka cluster "
            "in kafka.bootstrap_servers)",
        ),
    }
    with ThreadPoolExecutor(3) as pool:
        futures = {
            name: pool.submit(codegend, env, *args, check=False)
            for name, (env, args) in runs.items()
        }
    for name, future in futures.items():
        result = future.result()
        assert (result.returncode, the_error(result)) == expected[name], name
    assert not settings.store.path.exists()
