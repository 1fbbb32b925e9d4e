"""``codegend config``, ``schemas`` and ``version``: what this codegend is, how it is
configured, and the contract of its messages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daemon import __version__
from daemon.commands.common import ConfigOption, JsonOption, cells, out, usage_error_on
from daemon.errors import CodegendError, ConfigError


def show_config(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Print the effective configuration: each key's value and where it comes from
    (default, file, environment); secrets are masked."""
    from daemon.settings import describe_settings

    with usage_error_on(ConfigError):
        entries = describe_settings(config)
    if as_json:
        document = {e.key: {"value": e.value, "source": e.source} for e in entries}
        print(json.dumps(document, indent=2))
        return
    table = Table("key", "value", "source", title="codegend configuration")
    for entry in entries:
        style = "" if entry.source == "default" else "bold"
        table.add_row(*cells(entry.key, _config_value(entry.value), entry.source), style=style)
    out.print(table, highlight=False)
    if config is not None:
        out.print(f"file: {config}", highlight=False, markup=False)
    api_key = "set" if os.environ.get("ANTHROPIC_API_KEY") else "not set"
    out.print(f"ANTHROPIC_API_KEY: {api_key} (read by the Anthropic SDK itself)", highlight=False)


def _config_value(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def schemas(
    directory: Annotated[Path, typer.Argument(file_okay=False)] = Path("schemas"),
) -> None:
    """Write the JSON Schema files of the messages and the AsyncAPI document of the topics
    (generated from the pydantic models)."""
    from daemon import asyncapi
    from daemon.schemafiles import write_schemas

    for path in write_schemas(directory):
        out.print(f"wrote {path}", highlight=False, markup=False)
    try:
        out.print(f"wrote {asyncapi.write(directory)}", highlight=False, markup=False)
    except ImportError:
        raise CodegendError("asyncapi.yaml needs PyYAML: pip install -e '.[test]'") from None


def version() -> None:
    """Print the version."""
    out.print(__version__)
