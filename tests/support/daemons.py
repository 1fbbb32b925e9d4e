"""The daemon in-process: run it for the length of a block, follow a job's events, a second
daemon replaying a cassette, and one job run from request to its last event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from daemon.client import Client
from daemon.contract import Event
from daemon.llm import LLMProvider
from daemon.service import Daemon
from daemon.settings import Settings
from tests.support.sample_requests import request_bytes
from tests.support.topics import produce

EVENT_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 15.0


@contextlib.asynccontextmanager
async def running(settings: Settings, llm: LLMProvider | None = None) -> AsyncIterator[Daemon]:
    """A daemon that has started intake; asked to stop, and awaited, when the block ends."""
    daemon = Daemon(settings, llm=llm)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        await task
    await _settled(daemon)
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 60)


async def _settled(daemon: Daemon, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """In cluster mode, until the group has assigned the daemon its partitions and they are
    restored (``/readyz`` says ``restoring`` meanwhile), so a test starts from a daemon
    that reads its requests; bounded, for the tests that start one that cannot."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while daemon.ownership is not None and not daemon.ownership.settled:
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


async def collect(
    settings: Settings, job_id: str, completions: int = 1, timeout_s: float = EVENT_TIMEOUT_S
) -> list[Event]:
    """Every event of a job, until its ``completions``-th job.completed (one per run)."""
    found: list[Event] = []
    async with Client(settings) as client, asyncio.timeout(timeout_s):
        async for event in client.events(job_id, follow=True, until_completed=completions):
            found.append(event)
    return found


def replay_settings(
    make_settings: Callable[..., Settings],
    live: Settings,
    cassette: Path,
    tmp_path: Path,
    **sections: Any,
) -> Settings:
    """A second daemon replaying ``cassette``: topics, group and store of its own."""
    kafka = live.kafka
    return make_settings(
        kafka={
            "requests_topic": kafka.requests_topic + "-replay",
            "events_topic": kafka.events_topic + "-replay",
            "group_id": kafka.group_id + "-replay",
            # a changelog of its own: the live daemon's holds the live job of the same id
            "changelog_topic": kafka.changelog_topic + "-replay",
            "commands_topic": kafka.commands_topic + "-replay",
        },
        llm={"provider": "replay", "cassette_dir": cassette},
        store={"path": tmp_path / "replay.db"},
        output={"dir": tmp_path / "replayed"},
        **sections,
    )


async def run_job(settings: Settings, job_id: str) -> list[Event]:
    """One sample request through a daemon started for it: every event of its job."""
    async with running(settings):
        await produce(settings, request_bytes(request_id=job_id))
        return await collect(settings, job_id)


def phase_event(events: list[Event], phase: str) -> Event:
    """The event that ended ``phase``: its phase.completed or phase.failed."""
    return next(
        e for e in events if e.type in ("phase.completed", "phase.failed") and e.phase == phase
    )
