"""``codegend config`` in subprocesses: values with their sources, secrets masked, and bad
keys or values named with what is allowed."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.processes import codegend

PASSWORD = "s3cret-sasl-password"


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "codegend.toml"
    config.write_text('[kafka]\ngroup_id = "from-file"\nsasl_username = "codegend"\n')
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODEGEND_")},
        "CODEGEND_CONFIG": str(config),
        "CODEGEND_KAFKA__SASL_PASSWORD": PASSWORD,
        "CODEGEND_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "COLUMNS": "120",
    }


def test_values_sources_and_masked_secrets_as_a_table_and_as_json(env):
    with ThreadPoolExecutor(2) as pool:
        table_run = pool.submit(codegend, env, "config")
        json_run = pool.submit(codegend, env, "config", "--json")
    table, as_json = table_run.result().stdout, json_run.result().stdout
    for output in (table, as_json):
        assert PASSWORD not in output
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if "│" in line}
    assert (
        "********" in rows["kafka.sasl_password"] and "environment" in rows["kafka.sasl_password"]
    )
    assert "from-file" in rows["kafka.group_id"] and "file" in rows["kafka.group_id"]
    assert "default" in rows["kafka.events_topic"]
    document = json.loads(as_json)
    assert document["kafka.sasl_password"] == {"value": "********", "source": "environment"}
    assert document["kafka.security_protocol"] == {"value": "SASL_SSL", "source": "environment"}
    assert document["kafka.group_id"] == {"value": "from-file", "source": "file"}
    assert document["jobs.max_concurrent"] == {"value": 4, "source": "default"}


def test_a_bad_key_or_value_is_named_with_what_is_allowed(env):
    cases = {
        "CODEGEND_KAFKA__BOOTSTRP_SERVERS": (
            "x:9092",
            "kafka.bootstrp_servers: unknown key; did you mean kafka.bootstrap_servers?",
        ),
        "CODEGEND_JOBS__EXECUTION": (
            "sideways",
            "jobs.execution: 'sideways' is not allowed; allowed: 'sequential' or 'parallel'",
        ),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = {
            message: pool.submit(codegend, {**env, name: value}, "config", check=False)
            for name, (value, message) in cases.items()
        }
    for message, run in runs.items():
        result = run.result()
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
