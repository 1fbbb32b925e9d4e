"""The ``codegend`` command line in subprocesses, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from daemon.states import PHASE_NAMES
from daemon.store import Store
from daemon.verify.toolchain import toolchain_available
from tests.support.daemons import collect
from tests.support.messages_server import MessagesServer
from tests.support.processes import (
    CODEGEND,
    ROOT,
    codegend,
    daemon_env,
    demo_env,
    settings_from,
    start_daemon,
    stop,
    wait_for,
)
from tests.support.sample_requests import write_request
from tests.support.topics import raw_events


@pytest.fixture
def env(tmp_path, kafka_bootstrap, topic_names):
    server = MessagesServer(latency_s=0.15).start()
    yield daemon_env(tmp_path, kafka_bootstrap, topic_names, server.url), server
    server.stop()


def run_demo(tmp_path, *args: str, timeout: float = 120, **settings: str):
    return subprocess.run(
        [*CODEGEND, "demo", "--output", str(tmp_path / "out"), *args],
        env=demo_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_demo_produces_the_sample_project(tmp_path):
    # the step log and the files; the toolchain tier is the task-tracker tests' subject
    result = run_demo(tmp_path, CODEGEND_VERIFY__TOOLCHAIN="false")
    assert result.returncode == 0, result.stderr
    project = tmp_path / "out" / "demo-car-management-app"
    files = [p for p in project.rglob("*") if p.is_file()]
    assert len(files) >= 50
    assert len([p for p in files if p.parts[len(project.parts)] == "backend"]) >= 10
    assert len([p for p in files if p.parts[len(project.parts)] == "frontend"]) >= 15
    assert (project / "backend" / "requirements.txt").is_file()
    assert json.loads((project / "frontend" / "package.json").read_text())["scripts"]
    log = result.stderr
    assert "STEP 3: BACKEND API GENERATION (Multi-phase)" in log
    assert "Step 3.2: Generating data models and schemas..." in log
    assert "✓ Step 3/6: Backend API generated (" in log
    assert f"Chained generation completed: {len(files)} files generated" in log
    assert "[demo-car-management-app]" in log
    closing = [line.split("[-] ", 1)[-1] for line in log.rstrip().splitlines()[-2:]]
    assert closing == [
        "Verification: 0 problems found, 0 fixed, 0 remaining; 0 rounds, 0 repair calls",
        "Toolchain tier: did not run (verify.toolchain = false)",
    ]


FLAWED_SUMMARY = "Verification: {} problems found, {} fixed, 0 remaining; 1 round, 2 repair calls"


def flawed_project(tmp_path) -> dict[str, str]:
    project = tmp_path / "out" / "demo-task-tracker"
    return {
        p.relative_to(project).as_posix(): p.read_text() for p in project.rglob("*") if p.is_file()
    }


def test_demo_example_without_node_says_the_toolchain_tier_is_off(tmp_path):
    # no node or npm on PATH (the daemon runs by its absolute path)
    result = run_demo(tmp_path, "--example", "task-tracker", PATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "the toolchain tier of VERIFY is off: node and npm are not installed" in log
    assert "round 1: 3 problems in 2 files; asking FE_PAGES, FE_COMPONENTS" in log
    closing = [line.split("[-] ", 1)[-1] for line in log.rstrip().splitlines()[-2:]]
    assert closing == [
        FLAWED_SUMMARY.format(3, 3),
        "Toolchain tier: did not run: node and npm are not installed",
    ]
    files = flawed_project(tmp_path)
    assert len(files) == 44
    assert "TaskCrd" not in files["frontend/src/pages/TaskListPage.tsx"]
    assert "formatDueDate" not in files["frontend/src/components/TaskCard.tsx"]
    assert "(example answers from examples/cassettes/task-tracker, not live model output)" in log


@pytest.mark.toolchain
@pytest.mark.skipif(toolchain_available() is not None, reason=f"{toolchain_available()}")
@pytest.mark.timeout(900)  # two toolchain runs: before and after the repairs
def test_demo_example_runs_the_toolchain_tier_when_node_is_installed(tmp_path):
    """The task-tracker example through the CLI: the toolchain tier finds what the static
    tier cannot, the repairs fix it, and the repaired project builds and boots."""
    cache = ROOT / ".venv" / "toolchain-cache"  # warm, shared with tests/integration
    result = run_demo(
        tmp_path, "--example", "task-tracker", timeout=840, CODEGEND_VERIFY__CACHE_DIR=str(cache)
    )
    assert result.returncode == 0, result.stderr
    log = result.stderr
    # the static tier's three and tsc's two (the import and the name); the route matches no
    # route of the booted app's /openapi.json either, a call the static tier reported already
    assert "round 1: 5 problems in 2 files; asking FE_PAGES, FE_COMPONENTS" in log
    closing = [line.split("[-] ", 1)[-1] for line in log.rstrip().splitlines()[-2:]]
    assert closing == [
        FLAWED_SUMMARY.format(5, 5),
        "Toolchain tier: ran; the project builds and boots",
    ]
    assert len(flawed_project(tmp_path)) == 44


def test_demo_with_an_unknown_example_lists_the_examples(tmp_path):
    result = run_demo(tmp_path, "--example", "no-such-app")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no example 'no-such-app'; the examples are: car-management-app, task-tracker"
    )
    assert not (tmp_path / "out").exists()


def test_submit_watch_status_export(env, tmp_path):
    variables, server = env
    daemon = start_daemon(variables, tmp_path / "daemon.log")
    try:
        submitted = codegend(variables, "submit", str(write_request(tmp_path, "cli-1")))
        assert submitted.stdout.strip() == "cli-1"
        watched = codegend(variables, "watch", "cli-1", timeout=120)
        lines = watched.stdout.strip().splitlines()
        assert "job.accepted" in lines[0] and "job.completed" in lines[-1]
        assert sum("phase.completed" in line for line in lines) == 12  # VERIFY's too
        as_json = codegend(variables, "watch", "cli-1", "--json")
        events = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finally:
        assert stop(daemon) == 0
    status = json.loads(codegend(variables, "status", "cli-1", "--json").stdout)
    assert status["state"] == "COMPLETED"
    assert [p["status"] for p in status["phases"]] == ["completed"] * 12
    exported = codegend(variables, "export", "cli-1", str(tmp_path / "exported"))
    assert "30 files" in exported.stdout
    log = (tmp_path / "daemon.log").read_text()
    assert "sk-ant-acceptance-secret" not in log
    assert "Chained generation completed: 30 files generated" in log


def test_submit_rejects_bad_requests_locally(env, tmp_path):
    variables, _ = env
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"project_name": "Bad Name", "mockup": {"kind": "text", "description": "x"}})
    )
    result = codegend(variables, "submit", str(bad), check=False)
    assert result.returncode == 2 and "project_name" in result.stderr
    result = codegend(variables, "submit", check=False)
    assert result.returncode == 2


def test_help_names_the_environment_variables(env):
    variables, _ = env
    assert "CODEGEND_CONFIG" in codegend(variables, "run", "--help").stdout
    assert "CODEGEND_LOG_FORMAT" in codegend(variables, "run", "--help").stdout


def test_bad_configuration_names_the_key(env):
    variables, _ = env
    result = codegend({**variables, "CODEGEND_JOBS__EXECUTION": "sideways"}, "config", check=False)
    assert result.returncode == 2 and "jobs.execution" in result.stderr


def test_sigterm_then_restart_finishes_without_redoing_phases(env, tmp_path):
    variables, server = env
    settings = settings_from(variables)
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(variables, log_path)
    try:
        codegend(variables, "submit", str(write_request(tmp_path, "term-1")))
        wait_for(lambda: _completed_phases(settings, "term-1") >= 3, timeout_s=60)
        assert stop(daemon) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    _assert_drained(settings)
    done_before = _completed_phases(settings, "term-1")
    assert 3 <= done_before < 11, "the job should be interrupted mid-way"
    calls_before = len(server.requests)
    assert calls_before == done_before  # nothing cut, nothing retried: one call per phase

    restarted = start_daemon(variables, log_path)
    try:
        events = asyncio.run(collect(settings, "term-1", timeout_s=90))
    finally:
        assert stop(restarted) == 0
    assert events[-1].status == "completed"
    completed = [e.phase for e in events if e.type == "phase.completed"]
    assert sorted(completed) == sorted(PHASE_NAMES)  # each phase exactly once
    assert len(server.requests) == 11  # the restart paid only for the unfinished phases
    assert any(e.type == "job.resumed" for e in events)
    raw = asyncio.run(raw_events(settings))
    assert len({e.event_id for e in raw if e.job_id == "term-1"}) == events[-1].seq
    _assert_drained(settings)


def test_sigterm_past_the_grace_period_interrupts_the_phase(env, tmp_path):
    from tests.support.messages_server import Reply

    variables, server = env
    variables = {**variables, "CODEGEND_JOBS__SHUTDOWN_GRACE_S": "0.5"}
    settings = settings_from(variables)
    server.enqueue("DB", Reply(hang=True))
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(variables, log_path)
    try:
        codegend(variables, "submit", str(write_request(tmp_path, "grace-1")))
        server.wait_for_requests(2, timeout_s=30)  # ARCH, then the DB call that hangs
        assert stop(daemon) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    statuses = _assert_drained(settings)
    assert statuses["grace-1"]["DB"] == "interrupted"

    restarted = start_daemon(variables, log_path)
    try:
        events = asyncio.run(collect(settings, "grace-1", timeout_s=90))
    finally:
        assert stop(restarted) == 0
    assert events[-1].status == "completed"
    assert len(server.calls_for("DB")) == 2
    store = Store(settings.store.path)
    try:  # a stop on purpose is not a crash: nothing counts towards jobs.max_phase_crashes
        crashes = store.db.conn.execute("SELECT sum(interruptions) FROM phases").fetchone()[0]
        assert crashes == 0
    finally:
        store.close()
    _assert_drained(settings)


def _assert_drained(settings) -> dict[str, dict[str, str]]:
    """After a SIGTERM: no phase left running (each finished, or is 'interrupted'), nothing
    left unpublished. Returns every job's phase statuses."""
    store = Store(settings.store.path)
    try:
        statuses = {
            row["job_id"]: {p.phase: p.status for p in store.phases(row["job_id"])}
            for row in store.jobs()
        }
        backlog = store.outbox_backlog()
    finally:
        store.close()
    running = [
        (job, phase) for job, by in statuses.items() for phase, s in by.items() if s == "running"
    ]
    assert running == []
    assert backlog == 0
    return statuses


def _completed_phases(settings, job_id):
    if not settings.store.path.exists():
        return 0
    store = Store(settings.store.path)
    try:
        return list(store.phase_statuses(job_id).values()).count("completed")
    finally:
        store.close()


def test_resume_reruns_the_failed_phase_and_cancel_stops_a_job(env, tmp_path):
    from tests.support.messages_server import Reply

    variables, server = env
    server.enqueue("FE_PAGES", Reply(status=400, error_type="invalid_request_error"))
    daemon = start_daemon(variables, tmp_path / "daemon.log")
    try:
        codegend(variables, "submit", str(write_request(tmp_path, "res-1")))
        watched = codegend(variables, "watch", "res-1", check=False, timeout=120)
        assert watched.returncode == 2, watched.stdout  # partial
        assert "failed: FE_PAGES" in watched.stdout.splitlines()[-1]
        calls = len(server.requests)
        resumed = codegend(variables, "resume", "res-1")
        assert "resumes at FE_PAGES" in resumed.stdout
        again = asyncio.run(collect(settings_from(variables), "res-1", completions=2))
        assert again[-1].status == "completed"
        assert len(server.requests) == calls + 1  # only FE_PAGES ran again

        server.latency_s = 0.5
        codegend(variables, "submit", str(write_request(tmp_path, "can-1")))
        settings = settings_from(variables)
        wait_for(lambda: _completed_phases(settings, "can-1") >= 1, timeout_s=60)
        assert "cancel requested" in codegend(variables, "cancel", "can-1").stdout
        watched = codegend(variables, "watch", "can-1", check=False, timeout=120)
        assert watched.returncode == 3 and "cancelled" in watched.stdout.splitlines()[-1]
    finally:
        assert stop(daemon) == 0
    status = json.loads(codegend(variables, "status", "can-1", "--json").stdout)
    assert status["state"] == "CANCELLED"
    assert "completed" in [p["status"] for p in status["phases"]]
    assert "pending" in [p["status"] for p in status["phases"]]
    missing = codegend(variables, "status", "no-such-job", check=False)
    assert missing.returncode == 1 and "no job 'no-such-job'" in missing.stderr
