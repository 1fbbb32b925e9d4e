"""The committed schema files and examples must match the pydantic models."""

import json
from pathlib import Path

import pytest

from daemon.contract import GenerationRequest, parse_event
from daemon.schemafiles import SCHEMA_FILES, render
from daemon.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_files_are_generated_from_the_models(name):
    committed = (ROOT / "schemas" / name).read_text(encoding="utf-8")
    assert committed == render(name), f"run `codegend schemas` to regenerate {name}"


def test_examples_validate():
    request = json.loads((ROOT / "schemas/examples/generation-request.json").read_text())
    GenerationRequest.model_validate(request)
    for line in (ROOT / "schemas/examples/events.jsonl").read_text().splitlines():
        parse_event(line)
    GenerationRequest.model_validate_json((ROOT / "examples/car-management-app.json").read_text())


def test_default_toml_is_the_code_defaults():
    from_file = load_settings(ROOT / "config" / "default.toml")
    defaults = load_settings()
    assert from_file.model_dump(exclude={"phases"}) == defaults.model_dump(exclude={"phases"})
    for state, phase in from_file.phases.items():
        assert phase.max_tokens == defaults.max_tokens_for(state)
