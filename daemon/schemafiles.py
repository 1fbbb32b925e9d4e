"""The JSON Schema files of the contract, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon.contract import Event, GenerationRequest

SCHEMA_FILES: dict[str, type] = {
    "generation-request.schema.json": GenerationRequest,
    "event.schema.json": Event,
}
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(model: Any) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}


def render(model: Any) -> str:
    return json.dumps(schema_of(model), indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_FILES.items():
        path = directory / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
