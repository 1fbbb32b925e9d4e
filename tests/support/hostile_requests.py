"""Hostile requests, shared by the unit tests of intake and the hostile tier: named inputs
that once stopped the daemon, and hypothesis strategies for any bytes and any JSON value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

GOOD = {"project_name": "shop", "mockup": {"kind": "text", "description": "A shop"}}
_TAIL = b', "mockup": {"kind": "text", "description": "x"}}'


def good_request(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


# Each of these is a message that cannot become a job: the dead-letter topic, nothing else.
NAMED: dict[str, bytes] = {
    "2000 brackets": b"[" * 2000,
    "2000 open objects": b'{"a":' * 2000,
    "5000-digit project_name": b'{"project_name": ' + b"9" * 5000 + _TAIL,
    "5000-digit max_tokens": good_request()[:-1]
    + b', "options": {"max_tokens": {"DB": '
    + b"9" * 5000
    + b"}}}",
    "NaN and Infinity": b'{"project_name": NaN, "request_id": Infinity' + _TAIL,
    "1e999": b'{"project_name": 1e999' + _TAIL,
    "lone surrogate": good_request()[:-3] + b'\\ud800"}}',
    "invalid UTF-8": b'{"project_name": "\xff\xfe"' + _TAIL,
    "UTF-16": json.dumps(GOOD).encode("utf-16"),
    "empty": b"",
    "a JSON string": b'"just a string"',
    "deep array in a key": good_request()[:-1] + b', "x": ' + b"[" * 150 + b"]" * 150 + b"}",
    "newline and ANSI in a key": good_request(**{"evil\n12:00:00 INFO    [-] forged\x1b[31m": 1}),
    "100 KB key": good_request(**{"k" * 100_000: 1}),
    "1000 unknown phases": good_request(options={"phases": [f"P{i}\n" for i in range(1000)]}),
    "trailing garbage": good_request() + b"garbage",
}

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)
_FIELDS = ("request_id", "project_name", "mockup", "stack", "options")


@st.composite
def near_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A good request with some fields replaced by any JSON value, some dropped, some added."""
    request: dict[str, Any] = {**GOOD, "request_id": draw(st.sampled_from(["r-1", "r-2", None]))}
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            request[name] = draw(JSON_VALUES)
        else:
            request.pop(name, None)
    request.update(draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=2)))
    return request


def _encoded(value: Any, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate in generated text becomes bytes that are not UTF-8
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


ANY_JSON = st.builds(_encoded, JSON_VALUES | near_requests(), st.booleans())
DEEP = st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth)
HUGE_NUMBERS = st.integers(min_value=4000, max_value=6000).map(
    lambda digits: b'{"project_name": ' + b"7" * digits + _TAIL
)
# Any bytes at all, JSON of any shape, near-valid requests, deep nesting, huge numbers.
ANY_MESSAGE = st.binary(max_size=200) | ANY_JSON | DEEP | HUGE_NUMBERS
