"""Logging: the seed's readable step lines for people, one JSON object per line for machines.

Every record carries the job id (``-`` when it is about no job), given through
``extra={"job_id": ..., "phase": ...}``. Messages quote text from outside (request keys,
model answers, broker errors): the text format escapes control characters in every record,
so no message can forge a line or send escape sequences to a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(job_id)s] %(message)s"


def printable(text: str) -> str:
    """``text`` on one line with every control character escaped (``\\n``, ``\\x1b``, ``\\u202e``)."""
    return _CONTROLS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return {10: "\\n", 13: "\\r", 9: "\\t"}.get(code) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    )


class _JobContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = "-"
        return True


class TextFormatter(logging.Formatter):
    """One line per record with its message and job id escaped (:func:`printable`); the lines
    of a traceback are indented, so none of them can pass for a record of its own."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        shown = logging.makeLogRecord(vars(record))
        shown.message = printable(record.message)
        shown.job_id = printable(str(getattr(record, "job_id", "-")))
        return super().formatMessage(shown)

    def formatException(self, ei: object) -> str:
        return _indented(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("  " + printable(line) for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def setup_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_JobContext())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK's HTTP client logs a line per request at INFO: noise beside the phase lines.
    for noisy in (
        "aiokafka",
        "kafka",
        "httpx",
        "httpx2",
        "httpcore2",
        "aiohttp",
        "anthropic",
        "transitions",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
