"""A generation request as ``codegend submit`` is given it: a JSON file, stdin, or a
project name with a mockup text or image, checked against the settings' limits."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from daemon.contract import IMAGE_MEDIA_TYPES, GenerationRequest, ImageMockup
from daemon.errors import UsageError
from daemon.settings import Settings

IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def read_request(
    file: Path | None,
    project: str | None,
    mockup_text: str | None,
    mockup_image: Path | None,
    request_id: str | None,
) -> GenerationRequest:
    """The request from ``file`` or from the flags; `UsageError` for a wrong combination or
    an unreadable file, pydantic's ``ValidationError`` for a request that is not valid."""
    flags = [
        name
        for name, value in (
            ("--project", project),
            ("--mockup-text", mockup_text),
            ("--mockup-image", mockup_image),
        )
        if value is not None
    ]
    raw: object
    if file is not None and flags:
        raise UsageError(f"give a request FILE or {' / '.join(flags)}, not both")
    if file is not None:
        raw = _load_json(file)
    elif project is not None and (mockup_text is None) != (mockup_image is None):
        mockup = (
            _image_mockup(mockup_image)
            if mockup_image is not None
            else {"kind": "text", "description": mockup_text}
        )
        raw = {"project_name": project, "mockup": mockup}
    elif mockup_text is not None and mockup_image is not None:
        raise UsageError("give --mockup-text or --mockup-image, not both")
    else:
        raise UsageError(
            "give a request FILE (or - for stdin), or --project with --mockup-text or --mockup-image"
        )
    if request_id is not None and isinstance(raw, dict):
        raw = {**raw, "request_id": request_id}
    return GenerationRequest.model_validate(raw)


def check_size(request: GenerationRequest, settings: Settings) -> None:
    """Refuse a mockup image over ``llm.max_image_bytes`` before it is produced."""
    mockup = request.mockup
    limit = settings.llm.max_image_bytes
    if isinstance(mockup, ImageMockup) and mockup.size_bytes > limit:
        raise UsageError(
            f"the mockup image has {mockup.size_bytes} bytes, over llm.max_image_bytes ({limit})"
        )


def _load_json(file: Path) -> object:
    name = "stdin" if str(file) == "-" else str(file)
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no request file at {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {name}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}") from None


def _image_mockup(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no image file at {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return {"kind": "image", "media_type": _media_type(path, data), "data": _b64(data)}


def _media_type(path: Path, data: bytes) -> str:
    """The type the image's first bytes declare (its name may lie)."""
    for signature, media_type in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise UsageError(
        f"{path} is not a PNG, JPEG, WebP or GIF image (the types a mockup may have: "
        f"{', '.join(IMAGE_MEDIA_TYPES)})"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
