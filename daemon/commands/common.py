"""What the ``codegend`` subcommands share: the consoles, the common options, the exit
codes, loading the settings, opening the store, and printing an error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict, cast, get_args

import typer
from rich.console import Console
from rich.text import Text

from daemon.errors import CodegendError, ConfigError, StoreError, UsageError
from daemon.logs import LogFormat
from daemon.settings import Settings, load_settings

if TYPE_CHECKING:
    from daemon.store import Store

EXIT_FAILED = 1  # the command ran and failed
EXIT_USAGE = 2  # the command, its arguments or its configuration are wrong: nothing ran
EXIT_INTERRUPTED = 130  # Ctrl-C

out = Console()
err = Console(stderr=True)


class EnvVar(TypedDict):
    """The keywords of an option read from ``CODEGEND_<NAME>`` and named in ``--help``."""

    envvar: str
    show_envvar: bool


def env(name: str) -> EnvVar:
    return {"envvar": f"CODEGEND_{name}", "show_envvar": True}


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file overlaying config/default.toml.",
        dir_okay=False,
        **env("CONFIG"),
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="text (the readable step log) or json (one object per line).",
        **env("LOG_FORMAT"),
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.", **env("JSON"))]
PlainOption = Annotated[
    bool,
    typer.Option(
        "--plain",
        help="One line per event instead of the live view (the default when not on a terminal).",
        **env("PLAIN"),
    ),
]


def show_error(message: object, label: str = "error:") -> None:
    """One error on stderr, unwrapped and taken literally (no rich markup in it)."""
    text = str(message)
    separator = "" if text.startswith("\n") else " "
    err.print(Text.assemble((label, "red"), separator, text), soft_wrap=True, highlight=False)


@contextmanager
def usage_error_on(error: type[CodegendError], prefix: str = "") -> Iterator[None]:
    """Within it, an ``error`` is the operator's mistake: a `UsageError` (exit 2)."""
    try:
        yield
    except error as exc:
        raise UsageError(f"{prefix}{exc}") from exc


def load(config: Path | None) -> Settings:
    """The command's settings; a configuration that does not load is a usage error."""
    with usage_error_on(ConfigError):
        return load_settings(config)


def log_format_of(value: str) -> LogFormat:
    if value not in get_args(LogFormat):
        raise UsageError(f"--log-format must be text or json, not {value!r}")
    return cast(LogFormat, value)


def open_store(settings: Settings) -> Store:
    """The store of ``settings``, which must exist already (these commands create none). In
    cluster mode its writes mark their changelog keys, as the daemon's do, so that what
    they change is replicated."""
    from daemon.store import Store

    if not settings.store.path.exists():
        raise StoreError(f"no store at {settings.store.path}")
    return Store(settings.store.path, changelog=settings.kafka.cluster_mode)


def cells(*values: str) -> list[Text]:
    """Table cells taken literally: a string from the store, the model or a setting may
    hold rich markup (``[/x]`` would make rich raise)."""
    return [Text(value) for value in values]
