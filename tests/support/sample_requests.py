"""Well-formed generation requests: as bytes for the requests topic, as a file for
``codegend submit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEXT_REQUEST = {
    "project_name": "car-app",
    "mockup": {"kind": "text", "description": "A car list page"},
}


def request_bytes(**changes: Any) -> bytes:
    """The text request, with ``changes`` to its top-level fields, as JSON bytes."""
    return json.dumps({**TEXT_REQUEST, **changes}).encode()


def write_request(tmp_path: Path, request_id: str) -> Path:
    """A request for project ``shop`` with ``request_id``, written to ``<request_id>.json``."""
    path = tmp_path / f"{request_id}.json"
    path.write_text(
        json.dumps(
            {
                "request_id": request_id,
                "project_name": "shop",
                "mockup": {"kind": "text", "description": "A shop"},
            }
        )
    )
    return path
