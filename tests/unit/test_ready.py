"""A daemon's readiness around its start: ``/readyz`` says ``starting`` until intake runs,
then the ready file names the process and its metrics URL, until the daemon stops."""

from __future__ import annotations

import json
import os

import pytest

from daemon.errors import ConfigError
from daemon.service import Daemon, write_ready_file
from daemon.settings import load_settings
from tests.support.readiness import is_ready
from tests.support.scripted_llm import Scripted


async def test_starting_until_intake_runs_then_the_ready_file_names_the_process(tmp_path):
    ready_file = tmp_path / "codegend.ready"
    daemon = Daemon(load_settings(), llm=Scripted(), ready_file=ready_file)
    assert await daemon._not_ready() == "starting"
    daemon.metrics_port = 9464
    daemon._announce_ready()
    assert daemon.metrics.readiness.reason() is None
    assert json.loads(ready_file.read_text()) == {
        "pid": os.getpid(),
        "metrics": "http://127.0.0.1:9464",
    }
    assert is_ready(ready_file, os.getpid())
    assert not (tmp_path / "codegend.ready.partial").exists()
    daemon._withdraw_ready()
    assert not ready_file.exists()


def test_without_metrics_the_ready_file_has_no_url(tmp_path):
    ready_file = tmp_path / "codegend.ready"
    write_ready_file(ready_file, None)
    assert json.loads(ready_file.read_text()) == {"pid": os.getpid(), "metrics": None}


def test_a_ready_file_that_cannot_be_written_names_the_option(tmp_path):
    with pytest.raises(ConfigError, match="--ready-file: cannot write"):
        write_ready_file(tmp_path / "no-such-folder" / "codegend.ready", None)
