"""``codegend demo``: the whole flow offline, as a user would run it against real Kafka.

An embedded broker, the daemon with the example cassette as its model, the sample
request produced to the topic, its events followed to the end, the files in ``out/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path

from daemon.client import Client
from daemon.models import GenerationRequest
from daemon.outputs import output_folder
from daemon.settings import load_settings
from daemon.worker import Daemon

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLE_REQUEST = EXAMPLES / "car-management-app.json"
SAMPLE_CASSETTE = EXAMPLES / "cassettes" / "car-management-app"
EXIT_BY_STATUS = {"completed": 0, "partial": 2}


async def run_demo(output_dir: Path) -> int:
    request = GenerationRequest.model_validate(
        json.loads(SAMPLE_REQUEST.read_text(encoding="utf-8"))
    )
    with tempfile.TemporaryDirectory(prefix="codegend-demo-") as scratch:
        settings = load_settings(
            # A short session: the embedded broker holds a group's join for half of it.
            kafka={
                "bootstrap_servers": "embedded",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            },
            store={"path": Path(scratch) / "demo.db"},
            llm={"provider": "replay", "cassette_dir": SAMPLE_CASSETTE},
            output={"dir": output_dir},
            metrics={"port": 0},  # beside a daemon that holds the default port
        )
        daemon = Daemon(settings)
        running = asyncio.create_task(daemon.run(), name="daemon")
        started = asyncio.create_task(daemon.started.wait())
        await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            await running
        try:
            status = await _submit_and_follow(settings, daemon.bootstrap_servers, request)
        finally:
            daemon.request_stop()
            await running
    job_dir = output_dir / output_folder(request.request_id or "")
    log.info(
        "The project is in %s/ (example answers from %s, not live model output)",
        job_dir,
        SAMPLE_CASSETTE.relative_to(EXAMPLES.parent),
    )
    return EXIT_BY_STATUS.get(status, 1)


async def _submit_and_follow(settings, bootstrap: str, request: GenerationRequest) -> str:
    async with Client(settings, bootstrap_servers=bootstrap) as client:
        job_id = await client.submit(request)
        log.info("submitted %s as job %s", request.project_name, job_id)
        async for event in client.events(job_id):
            if event.type == "job.completed":
                log.info(
                    "job %s: %d files",
                    event.status,
                    event.files_total or 0,
                    extra={"job_id": job_id},
                )
                return event.status or "failed"
    return "failed"
