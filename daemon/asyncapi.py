"""The AsyncAPI 3.0 document of the contract (``schemas/asyncapi.yaml``): the three topics,
their messages and what the daemon does on each, with payload schemas generated from the
pydantic models, so teams in other languages can generate clients.

``codegend schemas`` writes it next to the JSON Schema files; a test fails if it drifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from daemon import __version__
from daemon.contract import (
    EVENTS,
    REQUEST_ID_PATTERN,
    REQUIRED_BY_TYPE,
    GenerationRequest,
)
from daemon.settings import KafkaSettings
from daemon.topics import TOPIC_HEADROOM_BYTES

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
FILE_NAME = "asyncapi.yaml"
HEADER = (
    "# The AsyncAPI document of codegend's Kafka contract: its topics, message schemas and events.\n"
    "# Generated from the pydantic models by `codegend schemas` (make schemas); do not edit.\n"
)
_SCHEMAS = "#/components/schemas/"


def build_document() -> dict[str, Any]:
    """The whole document, as plain data."""
    defaults = KafkaSettings()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "codegend",
            "version": __version__,
            "description": (
                "codegend consumes generation requests, runs each job through 11 phases of "
                "Claude calls and publishes an event for every step. Topic names are the "
                "defaults; each is configurable (kafka.requests_topic, kafka.events_topic, "
                "kafka.dead_letter_topic)."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": _channels(defaults),
        "operations": _operations(defaults),
        "components": {
            "messages": _messages(),
            "schemas": payload_schemas(),
            "securitySchemes": {
                "saslPlain": {"type": "plain", "description": "SASL PLAIN"},
                "saslScram256": {"type": "scramSha256", "description": "SASL SCRAM-SHA-256"},
                "saslScram512": {"type": "scramSha512", "description": "SASL SCRAM-SHA-512"},
                "clientCertificate": {"type": "X509", "description": "TLS client certificate"},
            },
        },
    }


def payload_schemas() -> dict[str, Any]:
    """JSON Schemas of the messages and everything they refer to, keyed by name; ``Event``
    is one of the event types' schemas."""
    roots, definitions = TypeAdapter.json_schemas(
        [
            ("GenerationRequest", "validation", TypeAdapter(GenerationRequest)),
            ("Event", "validation", EVENTS),
        ],
        ref_template=_SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = {
        **definitions["$defs"],
        "Event": {"title": "Event", **roots[("Event", "validation")]},
    }
    return dict(sorted(_without_discriminators(schemas).items()))


def _without_discriminators(node: Any) -> Any:
    """pydantic's OpenAPI-style ``discriminator`` objects are not AsyncAPI's (a property
    name naming schemas); the ``oneOf`` branches, each with its ``const`` kind, say it all."""
    if isinstance(node, dict):
        return {k: _without_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_without_discriminators(item) for item in node]
    return node


def _servers() -> dict[str, Any]:
    return {
        "plaintext": {
            "host": "localhost:9092",
            "protocol": "kafka",
            "description": "The brokers of kafka.bootstrap_servers; docker-compose.yml "
            "publishes one here.",
        },
        "secure": {
            "host": "kafka.example.com:9093",
            "protocol": "kafka-secure",
            "description": "A cluster with TLS (kafka.security_protocol SSL or SASL_SSL), "
            "optionally SASL.",
            "security": [
                {"$ref": f"#/components/securitySchemes/{name}"}
                for name in ("saslPlain", "saslScram256", "saslScram512", "clientCertificate")
            ],
        },
    }


def _channels(defaults: KafkaSettings) -> dict[str, Any]:
    def channel(address: str, description: str, message: str, **config: Any) -> dict[str, Any]:
        binding: dict[str, Any] = {"topic": address, "partitions": defaults.topic_partitions}
        if config:
            binding["topicConfiguration"] = config
        return {
            "address": address,
            "description": description,
            "messages": {_lower(message): {"$ref": f"#/components/messages/{message}"}},
            "bindings": {"kafka": {**binding, "bindingVersion": KAFKA_BINDING_VERSION}},
        }

    return {
        "requests": channel(
            defaults.requests_topic,
            "Generation requests; the daemon creates the topic if it is missing.",
            "GenerationRequest",
        ),
        "events": channel(
            defaults.events_topic,
            "Every step of every job, keyed by job_id, in seq order per job. Delivery is "
            "at-least-once: a re-published event keeps its event_id and seq.",
            "Event",
            **{"max.message.bytes": defaults.max_publish_bytes + TOPIC_HEADROOM_BYTES},
        ),
        "deadLetters": channel(
            defaults.dead_letter_topic,
            "Requests that could not be parsed or validated, as received.",
            "DeadLetter",
        ),
    }


def _operations(defaults: KafkaSettings) -> dict[str, Any]:
    def operation(action: str, channel: str, message: str, summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{_lower(message)}"}],
        }

    receive = operation(
        "receive",
        "requests",
        "GenerationRequest",
        "The daemon consumes requests in its consumer group and commits a request's offset "
        "once its job is stored; the same request_id never makes a second job.",
    )
    receive["bindings"] = {
        "kafka": {
            "groupId": {"type": "string", "default": defaults.group_id},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    return {
        "receiveRequests": receive,
        "sendEvents": operation(
            "send", "events", "Event", "The daemon publishes each job's events."
        ),
        "sendDeadLetters": operation(
            "send",
            "deadLetters",
            "DeadLetter",
            "The daemon forwards an unusable request, and publishes job.rejected when it "
            "names a request_id that no job has (once per request_id).",
        ),
    }


def _messages() -> dict[str, Any]:
    event_types = list(REQUIRED_BY_TYPE)
    fields = "; ".join(f"{kind}: {', '.join(REQUIRED_BY_TYPE[kind])}" for kind in event_types)
    return {
        "GenerationRequest": {
            "name": "GenerationRequest",
            "title": "Generation request",
            "summary": "A request to generate one project from a mockup.",
            "contentType": "application/json",
            "payload": {"$ref": _SCHEMAS + "GenerationRequest"},
            "bindings": _key(
                {"type": "string", "pattern": REQUEST_ID_PATTERN},
                "The request_id, if the request has one (optional).",
            ),
        },
        "Event": {
            "name": "Event",
            "title": "Job event",
            "summary": "One step of a job.",
            "description": "Every event has event_id, type, job_id, request_id, seq and ts; "
            f"the fields each type adds: {fields}.",
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": event_types,
                        "description": "The event's type, as in the payload.",
                    }
                },
            },
            "payload": {"$ref": _SCHEMAS + "Event"},
            "bindings": _key({"type": "string"}, "The job_id."),
        },
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead-lettered request",
            "summary": "A request that could not become a job, unchanged.",
            "contentType": "application/octet-stream",
            "headers": {
                "type": "object",
                "required": ["error", "source"],
                "properties": {
                    "error": {
                        "type": "string",
                        "maxLength": 1000,
                        "description": "Why the message was rejected.",
                    },
                    "source": {
                        "type": "string",
                        "pattern": r"^.+:\d+:\d+$",
                        "description": "Where it was read: topic:partition:offset.",
                    },
                    "truncated": {
                        "type": "string",
                        "pattern": r"^\d+$",
                        "description": "Present when the value was too large to forward "
                        "whole: the original size in bytes; the value keeps its first bytes.",
                    },
                },
                "description": "The message's own headers are kept as well; those named "
                "error, source or truncated are renamed original-error, original-source, "
                "original-truncated, so these three are only ever the daemon's.",
            },
            "payload": {"description": "The message's value as received (maybe not JSON at all)."},
            "bindings": _key({"type": "string"}, "The message's key as received."),
        },
    }


def _key(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "kafka": {
            "key": {**schema, "description": description},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _lower(name: str) -> str:
    return name[0].lower() + name[1:]


def render() -> str:
    """The YAML text of the document."""
    import yaml  # in the test extra: `make schemas` runs in the development environment

    body = yaml.safe_dump(build_document(), sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def write(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    path.write_text(render(), encoding="utf-8")
    return path
