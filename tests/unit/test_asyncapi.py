"""schemas/asyncapi.yaml: generated from the models, structurally valid AsyncAPI 3.0, and its
payload schemas accept the contract's examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from daemon import asyncapi
from daemon.contract import REQUIRED_BY_TYPE

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schemas" / asyncapi.FILE_NAME

REF = {
    "type": "object",
    "required": ["$ref"],
    "properties": {"$ref": {"type": "string", "pattern": "^#/"}},
}
SCHEMA_OR_REF = {"type": "object"}
MESSAGE = {
    "type": "object",
    "required": ["payload"],
    "properties": {
        "name": {"type": "string"},
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "contentType": {"type": "string"},
        "headers": SCHEMA_OR_REF,
        "payload": SCHEMA_OR_REF,
        "bindings": {"type": "object"},
    },
}
# The parts of the AsyncAPI 3.0.0 specification this document uses, with their required
# fields and allowed values (https://www.asyncapi.com/docs/reference/specification/v3.0.0).
ASYNCAPI_3_SUBSET = {
    "type": "object",
    "required": ["asyncapi", "info"],
    "properties": {
        "asyncapi": {"const": "3.0.0"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {"title": {"type": "string"}, "version": {"type": "string"}},
        },
        "defaultContentType": {"type": "string"},
        "servers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["host", "protocol"],
                "properties": {
                    "host": {"type": "string"},
                    "protocol": {"type": "string"},
                    "security": {"type": "array", "items": REF},
                },
            },
        },
        "channels": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "address": {"type": ["string", "null"]},
                    "messages": {"type": "object", "additionalProperties": REF},
                    "bindings": {"type": "object"},
                },
            },
        },
        "operations": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["action", "channel"],
                "properties": {
                    "action": {"enum": ["send", "receive"]},
                    "channel": REF,
                    "messages": {"type": "array", "items": REF},
                },
            },
        },
        "components": {
            "type": "object",
            "properties": {
                "schemas": {"type": "object", "additionalProperties": SCHEMA_OR_REF},
                "messages": {"type": "object", "additionalProperties": MESSAGE},
                "securitySchemes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {
                                "enum": [
                                    "userPassword", "apiKey", "X509", "symmetricEncryption",
                                    "asymmetricEncryption", "httpApiKey", "http", "oauth2",
                                    "openIdConnect", "plain", "scramSha256", "scramSha512",
                                    "gssapi",
                                ]
                            }
                        },
                    },
                },
            },
        },
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))


def test_the_committed_file_is_the_generated_one():
    assert COMMITTED.read_text(encoding="utf-8") == asyncapi.render(), (
        "run `codegend schemas` (make schemas) to regenerate schemas/asyncapi.yaml"
    )


def test_it_is_structurally_valid_asyncapi_3(document):
    jsonschema.validate(document, ASYNCAPI_3_SUBSET)
    assert document == json.loads(json.dumps(asyncapi.build_document()))


def test_every_reference_resolves(document):
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref


def test_operations_send_and_receive_the_messages_of_their_channel(document):
    actions = {name: op["action"] for name, op in document["operations"].items()}
    assert actions == {
        "receiveRequests": "receive",
        "sendEvents": "send",
        "sendDeadLetters": "send",
    }
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/")


def test_the_topics_and_their_headers(document):
    addresses = {name: c["address"] for name, c in document["channels"].items()}
    assert addresses == {
        "requests": "codegen.requests",
        "events": "codegen.events",
        "deadLetters": "codegen.requests.dlq",
    }
    messages = document["components"]["messages"]
    assert messages["Event"]["headers"]["required"] == ["type"]
    assert messages["Event"]["headers"]["properties"]["type"]["enum"] == list(REQUIRED_BY_TYPE)
    dead_letter = messages["DeadLetter"]["headers"]
    assert dead_letter["required"] == ["error", "source"]
    assert set(dead_letter["properties"]) == {"error", "source", "truncated"}


def test_the_payload_schemas_accept_the_examples_and_refuse_a_bad_request(document):
    request = json.loads((ROOT / "schemas/examples/generation-request.json").read_text())
    _validator(document, "GenerationRequest").validate(request)
    events = _validator(document, "Event")
    for line in (ROOT / "schemas/examples/events.jsonl").read_text().splitlines():
        events.validate(json.loads(line))
    bad = {**request, "project_name": "Not A Slug"}
    assert not _validator(document, "GenerationRequest").is_valid(bad)
    image = {**request, "mockup": {"kind": "image", "media_type": "image/bmp", "data": "AA=="}}
    assert not _validator(document, "GenerationRequest").is_valid(image)


def _validator(document: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    payload = document["components"]["messages"][message]["payload"]
    # The document is the root the payload's references point into.
    return jsonschema.Draft7Validator({**payload, "components": document["components"]})


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = (
            node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        )
    return node
