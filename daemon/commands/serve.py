"""``codegend run`` and ``codegend demo``: the daemon in the foreground, against the
configured brokers and model or offline with an example."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from daemon.commands.common import ConfigOption, LogFormatOption, env, load, log_format_of
from daemon.errors import UsageError
from daemon.logs import setup_logging
from daemon.settings import Settings

NO_CREDENTIALS = (
    "no Anthropic API key: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the daemon's "
    'environment, or set llm.provider = "replay" to answer from a cassette'
)


def run(
    config: ConfigOption = None,
    log_format: LogFormatOption = "text",
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            file_okay=False,
            help="Record every model answer into this cassette directory.",
            **env("RECORD"),
        ),
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option(
            "--ready-file",
            dir_okay=False,
            help="Once intake runs, write this file (the pid and the metrics URL, as JSON); "
            "removed when the daemon stops.",
            **env("READY_FILE"),
        ),
    ] = None,
) -> None:
    """Run the daemon: consume requests, run jobs, publish events; SIGTERM/SIGINT stop it cleanly."""
    from daemon.service import Daemon

    setup_logging(log_format_of(log_format))
    settings = load(config)
    require_model_credentials(settings)
    asyncio.run(Daemon(settings, record_dir=record, ready_file=ready_file).run())


def require_model_credentials(settings: Settings) -> None:
    """Stop at once, exit 2, when the SDK would find no credentials: otherwise every job
    would die at its first call. The replay provider needs none."""
    if settings.llm.provider == "replay":
        return
    problem = missing_model_credentials()
    if problem is not None:
        raise UsageError(problem)


def missing_model_credentials() -> str | None:
    """Why the Anthropic SDK could not authenticate, or None. The SDK resolves credentials
    itself (ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, a profile), so ask it rather than
    second-guess it; no value it finds is ever shown."""
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return None
    import anthropic

    try:
        client = anthropic.Anthropic(max_retries=0)
    except Exception as exc:  # a profile the SDK was told to use and cannot load
        return f"the Anthropic SDK cannot load its credentials ({type(exc).__name__}); {NO_CREDENTIALS}"
    try:
        found = client.api_key or client.auth_token or client.credentials is not None
    finally:
        client.close()
    return None if found else NO_CREDENTIALS


def demo(
    output: Annotated[
        Path,
        typer.Option("--output", help="Where the generated project goes.", **env("OUTPUT__DIR")),
    ] = Path("out"),
    log_format: LogFormatOption = "text",
    example: Annotated[
        str,
        typer.Option(
            "--example",
            help="The example to run: a request in examples/ with its cassette.",
        ),
    ] = "car-management-app",
) -> None:
    """The whole flow offline: embedded broker, daemon, an example request, files in out/."""
    from daemon.demo import example_names, run_demo

    names = example_names()
    if example not in names:
        raise UsageError(f"no example {example!r}; the examples are: {', '.join(names)}")
    setup_logging(log_format_of(log_format))
    raise typer.Exit(asyncio.run(run_demo(output, example)))
