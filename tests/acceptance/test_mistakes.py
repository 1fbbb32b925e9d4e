"""Operator mistakes through the ``codegend`` command: each is one line on stderr, naming
what is wrong, and an exit code (2: the command or its configuration, 1: it ran and
failed); never a traceback."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from tests.support.processes import CODEGEND, ROOT, demo_env

CASSETTE = ROOT / "examples" / "cassettes" / "car-management-app"


def run_codegend(tmp_path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``codegend ARGS`` in a user's shell (none of the suite's settings), on a store of
    its own in ``tmp_path``."""
    store = {"CODEGEND_STORE__PATH": str(tmp_path / "codegend.db")}
    return subprocess.run(
        [*CODEGEND, *args],
        env=demo_env(**store, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def the_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line the command ended with (its log may come before it)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], result.stderr
    return errors[0]


def test_the_embedded_broker_without_its_binary_is_one_line(tmp_path):
    missing = str(tmp_path / "no-tansu")
    # replay: `run` must get past its credentials check (no key here) to reach the broker
    replay = {"CODEGEND_LLM__PROVIDER": "replay", "CODEGEND_LLM__CASSETTE_DIR": str(CASSETTE)}
    commands = {
        "demo": (["demo", "--output", str(tmp_path / "out")], {}),
        "run": (["run"], {"CODEGEND_KAFKA__BOOTSTRAP_SERVERS": "embedded", **replay}),
    }
    for name in commands:
        (tmp_path / name).mkdir()
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = {
            name: pool.submit(
                run_codegend,
                tmp_path / name,
                *args,
                CALF_TANSU_BIN=missing,
                # the demo would probe node and npm first; this test is about the broker
                CODEGEND_VERIFY__TOOLCHAIN="false",
                **settings,
            )
            for name, (args, settings) in commands.items()
        }
    for name, run in runs.items():
        result = run.result()
        assert result.returncode == 1, (name, result.stderr)
        assert the_error(result) == (
            f"error: no tansu binary: CALF_TANSU_BIN={missing!r} does not point at an "
            "executable file."
        ), name


def test_replay_without_a_cassette_is_one_line(tmp_path):
    # the replay provider is the subject here: the default provider needs no cassette
    replay = {"CODEGEND_LLM__PROVIDER": "replay"}
    result = run_codegend(tmp_path, "run", **replay)
    assert result.returncode == 1
    assert the_error(result) == "error: llm.provider = 'replay' needs llm.cassette_dir"
    nowhere = tmp_path / "no-cassette"
    result = run_codegend(tmp_path, "run", **replay, CODEGEND_LLM__CASSETTE_DIR=str(nowhere))
    assert result.returncode == 1
    assert the_error(result) == f"error: cassette directory {nowhere} does not exist"


def test_other_mistakes_are_one_line_with_their_exit_code(tmp_path):
    store = tmp_path / "codegend.db"
    cases = {
        ("status",): (1, f"error: no store at {store}"),
        ("export", "job-1", str(tmp_path / "out")): (1, f"error: no store at {store}"),
        ("resume",): (2, "error: give a JOB_ID or --all"),
        ("status", "--config", str(tmp_path / "none.toml")): (
            2,
            f"error: config file {tmp_path / 'none.toml'} does not exist",
        ),
        ("prune", "--older-than", "soon"): (
            2,
            "error: --older-than: 'soon' is not a duration; give e.g. 30d, 12h, 90m, 45s or 2w",
        ),
        ("run", "--log-format", "xml"): (2, "error: --log-format must be text or json, not 'xml'"),
    }
    with ThreadPoolExecutor(3) as pool:
        runs = {args: pool.submit(run_codegend, tmp_path, *args) for args in cases}
    for args, run in runs.items():
        result = run.result()
        code, message = cases[args]
        assert (result.returncode, the_error(result)) == (code, message), args
    assert not store.exists()
