"""The JSON Schema files of the contract, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from daemon.contract import EVENTS, GenerationRequest

# Each file: the title of its schema, and what it is generated from.
SCHEMA_FILES: dict[str, tuple[str, TypeAdapter[Any]]] = {
    "generation-request.schema.json": ("GenerationRequest", TypeAdapter(GenerationRequest)),
    "event.schema.json": ("Event", EVENTS),
}
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(name: str) -> dict[str, Any]:
    title, adapter = SCHEMA_FILES[name]
    schema = adapter.json_schema()
    named = {} if "title" in schema else {"title": title}  # a union has none of its own
    return {"$schema": JSON_SCHEMA_DIALECT, **named, **schema}


def render(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMA_FILES:
        path = directory / name
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written
