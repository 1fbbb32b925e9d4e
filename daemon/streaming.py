"""Finding complete files in an answer while it streams in.

The files answer is ``{"files": [{"path": ..., "content": ...}, ...], "complete": ...}``.
``FileScanner`` follows the JSON text as it arrives (strings, escapes and nesting depth)
and hands out each file object the moment its closing brace arrives, so the phase can
commit it before the rest of the answer exists. Work is linear in the answer's length.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from daemon.states.base import GeneratedFile

FILE_DEPTH = 3  # answer object (1) > "files" array (2) > file object (3)


class FileScanner:
    def __init__(self) -> None:
        self._object: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: str) -> list[GeneratedFile]:
        """Take the next piece of the answer; return the files it completed."""
        done: list[GeneratedFile] = []
        for char in chunk:
            if self._depth >= FILE_DEPTH:
                self._object.append(char)
            if self._in_string:
                self._string_char(char)
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._open(char)
            elif char in "}]":
                self._close(done)
        return done

    def _string_char(self, char: str) -> None:
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == '"':
            self._in_string = False

    def _open(self, char: str) -> None:
        self._depth += 1
        if self._depth == FILE_DEPTH and char == "{":
            self._object = ["{"]

    def _close(self, done: list[GeneratedFile]) -> None:
        if self._depth == FILE_DEPTH and self._object:
            parsed = _file(self._object)
            if parsed is not None:
                done.append(parsed)
            self._object = []
        self._depth -= 1


def _file(chars: list[str]) -> GeneratedFile | None:
    try:
        return GeneratedFile.model_validate(json.loads("".join(chars)))
    except (ValueError, ValidationError):
        return None
