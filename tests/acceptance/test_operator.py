"""Operator mistakes, through the ``codegend`` command as a user runs it: no API key, model
strings that look like rich markup, pruning the store."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from daemon.store import Store
from tests.support.daemons import collect
from tests.support.messages_server import MessagesServer
from tests.support.processes import (
    CODEGEND,
    ROOT,
    codegend,
    daemon_env,
    settings_from,
    start_daemon,
    stop,
    wait_for,
)
from tests.support.sample_requests import write_request

CASSETTE = ROOT / "examples" / "cassettes" / "car-management-app"
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE")


@pytest.fixture
def env(tmp_path, kafka_bootstrap, topic_names):
    server = MessagesServer().start()
    yield daemon_env(tmp_path, kafka_bootstrap, topic_names, server.url), server
    server.stop()


def without_credentials(variables: dict[str, str], tmp_path) -> dict[str, str]:
    """The environment with no key, no token, and a home of its own (so no SDK profile of
    the machine's user, in ~/.config/anthropic, is found either)."""
    bare = {k: v for k, v in variables.items() if k not in CREDENTIAL_VARIABLES}
    bare.pop("ANTHROPIC_CONFIG_DIR", None)
    (tmp_path / "home").mkdir(exist_ok=True)
    bare["HOME"] = str(tmp_path / "home")
    return bare


def test_run_without_a_key_stops_at_once_with_one_line(env, tmp_path):
    variables, server = env
    bare = without_credentials(variables, tmp_path)
    started = time.monotonic()
    result = subprocess.run(
        [*CODEGEND, "run"], env=bare, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    took_s = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ANTHROPIC_API_KEY" in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "codegend.db").exists()  # stopped before touching anything
    assert server.requests == []
    assert took_s < 30


@pytest.mark.parametrize("variable", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
def test_run_with_a_key_or_a_token_starts(env, tmp_path, variable):
    variables, server = env
    secret = f"sk-ant-{variable.lower()}-secret"
    one = {**without_credentials(variables, tmp_path), variable: secret}
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(one, log_path)
    try:
        codegend(one, "submit", str(write_request(tmp_path, "key-1")))
        events = asyncio.run(collect(settings_from(one), "key-1", timeout_s=90))
    finally:
        assert stop(daemon) == 0
    assert events[-1].type == "job.completed" and events[-1].status == "completed"
    assert secret not in log_path.read_text()


def test_replay_needs_no_key(env, tmp_path):
    variables, _ = env
    bare = {
        **without_credentials(variables, tmp_path),
        # replay is the one provider that needs no key: the case under test
        "CODEGEND_LLM__PROVIDER": "replay",
        "CODEGEND_LLM__CASSETTE_DIR": str(CASSETTE),
    }
    daemon = start_daemon(bare, tmp_path / "daemon.log")
    assert stop(daemon) == 0


def test_status_shows_markup_in_model_strings_literally(env, tmp_path):
    variables, _ = env
    settings = settings_from(variables)
    error = "the model said [/x] and [bold red]boom[/] \\[ok]"
    _store_failed_job(settings.store.path, "mark-1", error)
    wide = {**variables, "COLUMNS": "400"}
    shown = codegend(wide, "status", "mark-1")
    assert error in shown.stdout
    listed = codegend(wide, "status")
    assert "mark-1" in listed.stdout


def _store_failed_job(path, job_id: str, error: str) -> None:
    from daemon.contract import GenerationRequest
    from daemon.records import PhaseOutcome
    from daemon.states import JobState

    store = Store(path)
    try:
        request = GenerationRequest.model_validate(
            {
                "request_id": job_id,
                "project_name": "shop",
                "mockup": {"kind": "text", "description": "x"},
            }
        )
        store.create_job(job_id, request, "test", ["ARCH"])
        job = store.job(job_id)
        store.start_phase(job, "ARCH", "1", JobState.ARCH)
        store.fail_phase(job, PhaseOutcome(phase="ARCH", step="1"), error, JobState.FAILED)
    finally:
        store.close()


def test_prune_deletes_finished_jobs_only(env, tmp_path):
    variables, _ = env
    settings = settings_from(variables)
    daemon = start_daemon(variables, tmp_path / "daemon.log")
    try:
        codegend(variables, "submit", str(write_request(tmp_path, "old-1")))
        events = asyncio.run(collect(settings, "old-1", timeout_s=90))
    finally:
        assert stop(daemon) == 0
    _store_running_job(settings.store.path, "running-1")

    kept = codegend(variables, "prune")  # the default retention: 30 days
    assert "deleted 0 finished jobs and 0 published events older than 30d" in kept.stdout
    dry = codegend(variables, "prune", "--older-than", "0s", "--dry-run")
    assert f"would delete 1 finished jobs and {len(events)} published events" in dry.stdout
    assert codegend(variables, "status", "old-1").returncode == 0  # a dry run deletes nothing
    pruned = codegend(variables, "prune", "--older-than", "0s")
    assert f"deleted 1 finished jobs and {len(events)} published events" in pruned.stdout
    assert codegend(variables, "status", "running-1").returncode == 0  # unfinished: kept
    # Cluster mode (on against a broker): the deletion reaches the replicated state once the
    # daemon that owns the job's partition runs again; until then the cluster still has it.
    daemon = start_daemon(variables, tmp_path / "daemon-again.log")
    try:
        wait_for(
            lambda: codegend(variables, "status", "old-1", "--remote", check=False).returncode,
            timeout_s=60,
            poll_s=1.0,
        )
    finally:
        assert stop(daemon) == 0
    gone = codegend(variables, "status", "old-1", check=False)
    assert gone.returncode == 1 and "no job 'old-1'" in gone.stderr

    bad = codegend(variables, "prune", "--older-than", "soon", check=False)
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    # 0 ("keep forever") is the setting whose prune message is checked here
    forever = codegend({**variables, "CODEGEND_STORE__RETENTION_DAYS": "0"}, "prune")
    assert "keep forever" in forever.stdout


def _store_running_job(path, job_id: str) -> None:
    from daemon.contract import GenerationRequest
    from daemon.states import JobState

    store = Store(path)
    try:
        request = GenerationRequest.model_validate(
            {
                "request_id": job_id,
                "project_name": "shop",
                "mockup": {"kind": "text", "description": "x"},
            }
        )
        store.create_job(job_id, request, "test", ["ARCH"])
        store.start_phase(store.job(job_id), "ARCH", "1", JobState.ARCH)
    finally:
        store.close()
