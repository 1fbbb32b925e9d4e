"""Chaos fixtures: a Messages API server that streams slowly enough to be killed mid-answer,
and a run of real daemons around it (every daemon left alive at the end is killed by pid)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from tests.chaos.harness import Chaos, phase_files
from tests.support.messages_server import Json, MessagesServer, Reply


def slow_server(
    per_phase: int, chars: int, latency_s: tuple[float, float], chunk_delay_s: float
) -> MessagesServer:
    """A server answering each phase with ``per_phase`` files, after a random latency, its
    answer streamed in 40-character deltas ``chunk_delay_s`` apart."""
    server = MessagesServer(chunk_delay_s=chunk_delay_s, phase_files=phase_files(per_phase, chars))
    rng = random.Random(0)

    def respond(body: Json) -> Reply:
        return replace(server.default_responder(body), delay_s=rng.uniform(*latency_s))

    server.responder = respond
    return server.start()


@pytest.fixture
def make_chaos(tmp_path, kafka_bootstrap, topic_names) -> Iterator[Callable[..., Chaos]]:
    """``make_chaos(server options..., bootstrap=..., CODEGEND_X=...)``: one run, on this
    test's topics and store (and the session's broker unless ``bootstrap`` says another)."""
    runs: list[Chaos] = []

    def make(
        per_phase: int = 5,
        chars: int = 400,
        latency_s: tuple[float, float] = (0.05, 0.2),
        chunk_delay_s: float = 0.004,
        bootstrap: str | None = None,
        **env: str,
    ) -> Chaos:
        server = slow_server(per_phase, chars, latency_s, chunk_delay_s)
        run = Chaos(tmp_path, bootstrap or kafka_bootstrap, topic_names, server, **env)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.kill_leftovers()
        run.server.stop()
