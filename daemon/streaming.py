"""Finding complete files in an answer while it streams in.

The files answer is ``{"files": [{"path": ..., "content": ...}, ...], "complete": ...}``.
``FileScanner`` follows the JSON text as it arrives (strings, escapes and nesting depth)
and hands out each file object the moment its closing brace arrives, so the phase can
commit it before the rest of the answer exists. Work is linear in the answer's length, and
whatever the text holds (nesting of any depth, unbalanced brackets, invalid Unicode) it
returns only valid files, never raises.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from daemon.states.base import GeneratedFile

FILE_DEPTH = 3  # answer object (1) > "files" array (2) > file object (3)


class FileScanner:
    def __init__(self) -> None:
        self._parts: list[str] = []  # the text of the file object being read, so far
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: str) -> list[GeneratedFile]:
        """Take the next piece of the answer; return the files it completed."""
        done: list[GeneratedFile] = []
        capture_from = 0 if self._depth >= FILE_DEPTH else None
        pos, end = 0, len(chunk)
        while pos < end:
            if self._in_string:
                pos = self._skip_string(chunk, pos)
                continue
            found = _STRUCTURE.search(chunk, pos)
            if found is None:
                break
            char, pos = found.group(), found.end()
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
                if self._depth == FILE_DEPTH and char == "{":
                    self._parts, capture_from = [], found.start()
            else:
                if self._depth == FILE_DEPTH and capture_from is not None:
                    self._parts.append(chunk[capture_from:pos])
                    parsed = _file(self._parts)
                    if parsed is not None:
                        done.append(parsed)
                    self._parts, capture_from = [], None
                self._depth -= 1
        if capture_from is not None:
            self._parts.append(chunk[capture_from:])
        return done

    def _skip_string(self, chunk: str, pos: int) -> int:
        """Move past string content up to its closing quote (or the chunk's end)."""
        if self._escaped:
            self._escaped = False
            return pos + 1
        found = _STRING_STOP.search(chunk, pos)
        if found is None:
            return len(chunk)
        if found.group() == "\\":
            self._escaped = True
        else:
            self._in_string = False
        return found.end()


_STRUCTURE = re.compile(r'["{}\[\]]')
_STRING_STOP = re.compile(r'["\\]')


def _file(parts: list[str]) -> GeneratedFile | None:
    """The file object read, or None when it is not one (the whole answer's interpretation
    then says what is wrong with it)."""
    try:
        return GeneratedFile.model_validate(json.loads("".join(parts)))
    except (ValueError, ValidationError, RecursionError):  # RecursionError: absurd nesting
        return None
