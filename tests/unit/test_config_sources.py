"""``codegend config``'s view of the settings: each key's value and source, secrets masked,
and errors that name the key and what it allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.settings import MASK, describe_settings, load_settings
from daemon.states import PHASE_NAMES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("CODEGEND_"):
            monkeypatch.delenv(name)


def by_key(entries):
    return {entry.key: entry for entry in entries}


def test_every_key_comes_from_the_defaults_without_file_or_environment():
    entries = by_key(describe_settings())
    assert {e.source for e in entries.values()} == {"default"}
    assert entries["kafka.bootstrap_servers"].value == "embedded"
    assert entries["store.path"].value == "codegend.db"
    assert entries["kafka.sasl_password"].value == ""
    assert [f"phases.{name}.max_tokens" in entries for name in PHASE_NAMES] == [True] * len(
        PHASE_NAMES
    )
    assert entries["phases.BE_ROUTES.max_tokens"].value == 5000


def test_the_source_is_the_layer_that_sets_the_key(tmp_path, monkeypatch):
    config = tmp_path / "codegend.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "file:9092"\ngroup_id = "from-file"\n'
        "[phases.BE_ROUTES]\nmax_tokens = 6000\nmodel = 'claude-file'\n"
        # a configured model needs a price (llm.prices)
        "[llm.prices.claude-file]\ninput = 1.0\noutput = 2.0\ncache_read = 0.1\ncache_write = 1.0\n"
    )
    monkeypatch.setenv("CODEGEND_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("CODEGEND_PHASES__fe_pages__MAX_TOKENS", "7000")
    entries = by_key(describe_settings(config, jobs={"max_concurrent": 2}))
    assert (
        entries["kafka.bootstrap_servers"].value,
        entries["kafka.bootstrap_servers"].source,
    ) == (
        "env:9092",
        "environment",
    )
    assert (entries["kafka.group_id"].value, entries["kafka.group_id"].source) == (
        "from-file",
        "file",
    )
    assert entries["phases.BE_ROUTES.max_tokens"].source == "file"
    assert entries["phases.BE_ROUTES.model"].value == "claude-file"
    assert (
        entries["phases.FE_PAGES.max_tokens"].value,
        entries["phases.FE_PAGES.max_tokens"].source,
    ) == (
        7000,
        "environment",
    )
    assert entries["jobs.max_concurrent"].source == "argument"
    assert entries["kafka.events_topic"].source == "default"


def test_the_default_file_sets_every_key_it_lists():
    entries = by_key(describe_settings(ROOT / "config" / "default.toml"))
    assert entries["kafka.bootstrap_servers"].source == "file"
    assert entries["llm.cassette_dir"].source == "default"  # commented out there


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("CODEGEND_KAFKA__SASL_PASSWORD", "hunter2-secret")
    entries = describe_settings()
    assert by_key(entries)["kafka.sasl_password"].value == MASK
    assert "hunter2-secret" not in repr(entries)


def test_an_unknown_key_is_named_with_the_closest_known_one(monkeypatch):
    monkeypatch.setenv("CODEGEND_KAFKA__BOOTSTRP_SERVERS", "x:9092")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "kafka.bootstrp_servers: unknown key; did you mean kafka.bootstrap_servers?" in message
    assert "CODEGEND_KAFKA__BOOTSTRP_SERVERS" in message


def test_an_unknown_key_far_from_any_lists_the_allowed_ones(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[jobs]\nzzz = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "jobs.zzz: unknown key; allowed: jobs.max_concurrent, jobs.execution" in message
    assert f"(from {config})" in message


def test_a_bad_value_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv("CODEGEND_JOBS__EXECUTION", "sideways")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "jobs.execution: 'sideways' is not allowed; allowed: 'sequential' or 'parallel'" in str(
        caught.value
    )


def test_a_broken_file_or_variable_is_a_config_error(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config)
    monkeypatch.setenv("CODEGEND_KAFKA", "{not json")
    with pytest.raises(ConfigError, match='field "kafka"'):
        load_settings()
