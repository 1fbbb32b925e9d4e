"""``codegend demo``: the whole flow offline, as a user would run it against real Kafka.

An embedded broker, the daemon with an example cassette as its model, the example's
request produced to the topic, its events followed to the end, the files in ``out/``, and
the verification summary of the run.

An example is ``examples/<name>.json`` (the request) with ``examples/cassettes/<name>/``
(the answers). The toolchain tier of VERIFY is on when node, npm and a Python with venv
are installed (``verify.toolchain`` in the environment decides instead, if set); its
package cache is ``verify.cache_dir`` if the environment sets it, else the user's cache
folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from daemon.client import Client
from daemon.contract import GenerationRequest, JobCompletedEvent, Verification
from daemon.outputs import output_folder
from daemon.service import Daemon
from daemon.settings import Settings, load_settings

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASSETTES = EXAMPLES / "cassettes"
DEFAULT_EXAMPLE = "car-management-app"
EXIT_BY_STATUS = {"completed": 0, "partial": 2}
TOOLCHAIN_ENV = "CODEGEND_VERIFY__TOOLCHAIN"
CACHE_DIR_ENV = "CODEGEND_VERIFY__CACHE_DIR"


def example_names() -> list[str]:
    """The examples: each request in examples/ that has a cassette of the same name."""
    return sorted(path.stem for path in EXAMPLES.glob("*.json") if (CASSETTES / path.stem).is_dir())


async def run_demo(output_dir: Path, example: str = DEFAULT_EXAMPLE) -> int:
    """Run ``example`` (one of ``example_names()``) through the daemon; the exit status."""
    request_file, cassette = EXAMPLES / f"{example}.json", CASSETTES / example
    request = GenerationRequest.model_validate(json.loads(request_file.read_text(encoding="utf-8")))
    verify, toolchain_off = _verify_settings()
    with tempfile.TemporaryDirectory(prefix="codegend-demo-") as scratch:
        settings = load_settings(
            # A short session: the embedded broker holds a group's join for half of it.
            kafka={
                "bootstrap_servers": "embedded",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            },
            store={"path": Path(scratch) / "demo.db"},
            llm={"provider": "replay", "cassette_dir": cassette},
            output={"dir": output_dir},
            metrics={"port": 0},  # beside a daemon that holds the default port
            verify=verify,
        )
        daemon = Daemon(settings)
        running = asyncio.create_task(daemon.run(), name="daemon")
        started = asyncio.create_task(daemon.started.wait())
        await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            await running
        try:
            completed = await _submit_and_follow(settings, daemon.bootstrap_servers, request)
        finally:
            daemon.request_stop()
            await running
    job_dir = output_dir / output_folder(request.request_id or "")
    log.info(
        "The project is in %s/ (example answers from %s, not live model output)",
        job_dir,
        cassette.relative_to(EXAMPLES.parent),
    )
    if completed is not None:
        for line in summary_lines(completed.verification, toolchain_off):
            log.info("%s", line)
    status = completed.status if completed is not None else None
    return EXIT_BY_STATUS.get(status or "failed", 1)


def _verify_settings() -> tuple[dict[str, Any], str | None]:
    """The toolchain tier on when it can run, unless the environment says otherwise; and
    why it is off, if the demo turned it off."""
    from daemon.verify.toolchain import toolchain_available

    verify: dict[str, Any] = {}
    off = None
    if TOOLCHAIN_ENV not in os.environ:
        off = toolchain_available()
        verify["toolchain"] = off is None
        if off is not None:
            log.info("the toolchain tier of VERIFY is off: %s", off)
    if CACHE_DIR_ENV not in os.environ:
        cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        verify["cache_dir"] = Path(cache_home) / "codegend" / "toolchain"
    return verify, off


def summary_lines(summary: Verification | None, toolchain_off: str | None = None) -> list[str]:
    """The closing lines of the demo: what VERIFY found, fixed and left, and whether the
    toolchain tier ran (``toolchain_off``: why the demo did not ask for it)."""
    if summary is None:
        return ["Verification: no summary (VERIFY did not run to its end)"]
    before, after = summary.problems_before, summary.problems_after
    lines = [
        f"Verification: {before} problems found, {max(before - after, 0)} fixed, "
        f"{after} remaining; {_count(summary.rounds, 'round')}, "
        f"{_count(summary.repair_calls, 'repair call')}"
    ]
    if "toolchain" in summary.tiers:
        verdict = "builds and boots" if summary.builds else "does not build or boot"
        lines.append(f"Toolchain tier: ran; the project {verdict}")
    elif summary.toolchain_skipped or toolchain_off:
        lines.append(f"Toolchain tier: did not run: {summary.toolchain_skipped or toolchain_off}")
    else:
        lines.append("Toolchain tier: did not run (verify.toolchain = false)")
    lines.extend(f"  remaining: {text}" for text in summary.remaining)
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


async def _submit_and_follow(
    settings: Settings, bootstrap: str, request: GenerationRequest
) -> JobCompletedEvent | None:
    """The job's job.completed event (None if the events ended without one)."""
    async with Client(settings, bootstrap_servers=bootstrap) as client:
        job_id = await client.submit(request)
        log.info("submitted %s as job %s", request.project_name, job_id)
        async for event in client.events(job_id):
            if isinstance(event, JobCompletedEvent):
                log.info(
                    "job %s: %d files",
                    event.status,
                    event.files_total,
                    extra={"job_id": job_id},
                )
                return event
    return None
