"""``python -m bench.robustness``: no phase lost to the model, and what caching saves.

N jobs against the local Messages API server, which cuts 10% of its answers at a random
point (``stop_reason: max_tokens``) and answers 10% of the calls with 429 or 529. The same
batch runs twice side by side, with prompt caching on and off. Reported: the phase success
rate (goal 100%), calls per phase, and the input tokens billed with caching against without
(cache writes bill at 1.25x, cache reads at 0.1x of an input token). The daemon runs in
this process (the real SDK over HTTP, the embedded broker); it writes bench/ROBUSTNESS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.broker import EmbeddedBroker
from daemon.client import Client
from daemon.contract import GenerationRequest
from daemon.service import Daemon
from daemon.settings import load_settings
from tests.support.messages_server import MessagesServer, Reply

ROOT = Path(__file__).resolve().parent.parent
CUT_SHARE = 0.10
LIMIT_SHARE = 0.10
CACHE_WRITE_PRICE = 1.25
CACHE_READ_PRICE = 0.10


@dataclass
class Figures:
    jobs: int
    completed_jobs: int
    phases_planned: int
    phases_completed: int
    calls: int
    faults_cut: int
    faults_limited: int
    input_tokens: int
    cache_creation: int
    cache_read: int
    wall_s: float

    @property
    def success_rate(self) -> float:
        return self.phases_completed / self.phases_planned

    @property
    def calls_per_phase(self) -> float:
        return self.calls / self.phases_planned

    @property
    def billed_input(self) -> float:
        """Input tokens as billed, in units of one uncached input token."""
        return (
            self.input_tokens
            + CACHE_WRITE_PRICE * self.cache_creation
            + CACHE_READ_PRICE * self.cache_read
        )


class FaultyModel:
    """The default answers, but 10% cut at a random point and 10% refused with 429/529."""

    def __init__(self, server: MessagesServer, seed: int) -> None:
        self._server = server
        self._rng = random.Random(seed)
        self.cut = 0
        self.limited = 0

    def __call__(self, body: dict) -> Reply:
        roll = self._rng.random()
        if roll < LIMIT_SHARE:
            self.limited += 1
            status = self._rng.choice([429, 529])
            return Reply(status=status, headers={"retry-after-ms": "20"})
        reply = self._server.default_responder(body)
        if roll < LIMIT_SHARE + CUT_SHARE and reply.text and reply.stop_reason == "end_turn":
            self.cut += 1
            at = self._rng.randint(1, len(reply.text) - 1)
            return Reply(text=reply.text[:at], stop_reason="max_tokens")
        return reply


async def run_batch(bootstrap: str, jobs: int, caching: bool, seed: int, scratch: Path) -> Figures:
    name = f"robust-{'cache' if caching else 'nocache'}-{seed}"
    with MessagesServer() as server:
        model = FaultyModel(server, seed)
        server.responder = model
        os.environ["ANTHROPIC_BASE_URL"] = server.url
        os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench-not-a-real-key")
        settings = load_settings(
            kafka={
                "bootstrap_servers": bootstrap,
                "requests_topic": f"{name}.requests",
                "events_topic": f"{name}.events",
                "dead_letter_topic": f"{name}.dlq",
                "group_id": name,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            },
            store={"path": scratch / f"{name}.db"},
            output={"dir": scratch / f"{name}-out"},
            llm={"prompt_caching": caching, "max_concurrent_requests": 50},
            jobs={"max_concurrent": 10},
        )
        started = time.monotonic()
        await _run(settings, jobs, name)
        wall_s = time.monotonic() - started
        return _figures(settings.store.path, jobs, model, wall_s)


async def _run(settings, jobs: int, name: str) -> None:
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    await daemon.started.wait()
    try:
        async with Client(settings, bootstrap_servers=settings.kafka.bootstrap_servers) as client:
            ids = [
                await client.submit(
                    GenerationRequest.model_validate(
                        {
                            "request_id": f"{name}-{i}",
                            "project_name": f"app-{i}",
                            "mockup": {"kind": "text", "description": "A fleet dashboard " * 200},
                        }
                    )
                )
                for i in range(jobs)
            ]
            pending = set(ids)
            async for event in client.events():
                if event.type == "job.completed":
                    pending.discard(event.job_id)
                    if not pending:
                        break
    finally:
        daemon.request_stop()
        await task


def _figures(store_path: Path, jobs: int, model: FaultyModel, wall_s: float) -> Figures:
    conn = sqlite3.connect(store_path)
    try:
        planned, completed = conn.execute(
            "SELECT count(*), sum(status = 'completed') FROM phases"
        ).fetchone()
        done_jobs = conn.execute("SELECT count(*) FROM jobs WHERE state = 'COMPLETED'").fetchone()[
            0
        ]
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        tokens = conn.execute(
            "SELECT sum(input_tokens), sum(cache_creation_input_tokens), "
            "sum(cache_read_input_tokens) FROM calls"
        ).fetchone()
    finally:
        conn.close()
    return Figures(
        jobs,
        done_jobs,
        planned,
        completed,
        calls,
        model.cut,
        model.limited,
        tokens[0] or 0,
        tokens[1] or 0,
        tokens[2] or 0,
        wall_s,
    )


def report(cached: Figures, uncached: Figures) -> str:
    ratio = cached.billed_input / uncached.billed_input
    rows = [
        (
            "jobs completed",
            f"{cached.completed_jobs}/{cached.jobs}",
            f"{uncached.completed_jobs}/{uncached.jobs}",
        ),
        ("phase success rate", f"{cached.success_rate:.1%}", f"{uncached.success_rate:.1%}"),
        ("calls per phase", f"{cached.calls_per_phase:.2f}", f"{uncached.calls_per_phase:.2f}"),
        (
            "answers cut / calls refused (429, 529)",
            f"{cached.faults_cut} / {cached.faults_limited}",
            f"{uncached.faults_cut} / {uncached.faults_limited}",
        ),
        ("input tokens (uncached)", f"{cached.input_tokens:,}", f"{uncached.input_tokens:,}"),
        (
            "cache writes / cache reads",
            f"{cached.cache_creation:,} / {cached.cache_read:,}",
            f"{uncached.cache_creation:,} / {uncached.cache_read:,}",
        ),
        (
            "input billed, in input tokens",
            f"{cached.billed_input:,.0f}",
            f"{uncached.billed_input:,.0f}",
        ),
        ("wall time", f"{cached.wall_s:.1f} s", f"{uncached.wall_s:.1f} s"),
    ]
    lines = [
        "# Robustness and caching",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `python -m bench.robustness`: "
        f"{cached.jobs} jobs per run against the local Messages API server cutting "
        f"{CUT_SHARE:.0%} of its answers at a random point and refusing {LIMIT_SHARE:.0%} of "
        "the calls with 429 or 529; the same batch with prompt caching on and off, side by side.",
        "",
        "| | caching on | caching off |",
        "|---|---|---|",
        *(f"| {name} | {on} | {off} |" for name, on, off in rows),
        "",
        f"Input billed with caching / without: **{ratio:.2f}** "
        f"(cache writes at {CACHE_WRITE_PRICE}x, reads at {CACHE_READ_PRICE}x an input token). "
        f"Phase success rate: **{min(cached.success_rate, uncached.success_rate):.1%}** (goal 100%).",
        "",
    ]
    return "\n".join(lines)


async def main(jobs: int, out: Path) -> None:
    async with EmbeddedBroker() as broker:
        with tempfile.TemporaryDirectory(prefix="codegend-robust-") as scratch:
            cached = await run_batch(broker.bootstrap_servers, jobs, True, 1, Path(scratch))
            uncached = await run_batch(broker.bootstrap_servers, jobs, False, 1, Path(scratch))
    text = report(cached, uncached)
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "ROBUSTNESS.md")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.out))
