import base64
import json

import pytest
from pydantic import ValidationError

from daemon.contract import EVENTS, GenerationRequest, JobRejectedEvent

VALID = {"project_name": "car-app", "mockup": {"kind": "text", "description": "a login page"}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 32).decode()


def request(**changes):
    return {**VALID, **changes}


def test_minimal_request_gets_defaults():
    parsed = GenerationRequest.model_validate(VALID)
    assert parsed.request_id is None
    assert parsed.stack.backend == "fastapi" and parsed.stack.frontend == "react-vite"
    assert parsed.stack.database == "postgresql"
    assert parsed.options.phases is None


@pytest.mark.parametrize(
    "bad",
    [
        request(request_id=""),
        request(request_id="x" * 129),
        request(request_id="has space"),
        request(request_id="slash/no"),
        request(request_id=5),
        request(project_name="Car"),
        request(project_name="-car"),
        request(project_name="a" * 65),
        request(project_name="car_app"),
        request(project_name=""),
        {k: v for k, v in VALID.items() if k != "project_name"},
        {k: v for k, v in VALID.items() if k != "mockup"},
        request(mockup={"kind": "video", "description": "x"}),
        request(mockup={"kind": "text"}),
        request(mockup={"kind": "text", "description": ""}),
        request(mockup={"kind": "image", "media_type": "image/bmp", "data": PNG}),
        request(mockup={"kind": "image", "media_type": "image/png", "data": "not base64!"}),
        request(mockup={"kind": "image", "media_type": "image/png"}),
        request(mockup={"kind": "text", "description": "x", "extra": 1}),
        request(stack={"backend": ""}),
        request(stack={"orm": "x"}),
        request(options={"phases": ["NOPE"]}),
        request(options={"phases": []}),
        request(options={"max_tokens": {"DB": 10}}),
        request(options={"max_tokens": {"XX": 1000}}),
        request(options={"model": ""}),
        request(unknown_field=1),
    ],
)
def test_bad_requests_are_rejected(bad):
    with pytest.raises(ValidationError):
        GenerationRequest.model_validate(bad)


def test_image_mockup_and_options():
    parsed = GenerationRequest.model_validate(
        request(
            request_id="req-1:a.b",
            mockup={"kind": "image", "media_type": "image/png", "data": PNG, "notes": "dark mode"},
            options={"phases": ["DB"], "max_tokens": {"DB": 3000}, "model": "claude-haiku-5-5"},
        )
    )
    assert parsed.mockup.kind == "image"
    assert parsed.mockup.size_bytes == 40
    assert parsed.options.max_tokens == {"DB": 3000}


def test_event_requires_the_fields_of_its_type():
    common = {
        "event_id": "e1",
        "job_id": "j",
        "request_id": None,
        "seq": 1,
        "ts": "2026-01-01T00:00:00Z",
    }
    with pytest.raises(ValidationError) as missing:
        EVENTS.validate_python({**common, "type": "phase.failed", "phase": "DB"})
    assert {e["loc"][-1] for e in missing.value.errors()} == {"step", "error", "attempts"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EVENTS.validate_python({**common, "type": "job.rejected", "error": "bad", "phases": []})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        EVENTS.validate_python({**common, "type": "job.exploded"})
    event = EVENTS.validate_python({**common, "type": "job.rejected", "error": "bad"})
    assert type(event) is JobRejectedEvent and b'"phases"' not in event.to_json()
    assert json.loads(event.to_json())["request_id"] is None
