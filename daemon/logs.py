"""Logging: readable step lines for people, one JSON object per line for machines.

Every record carries the job id (``-`` when it is about no job), given through
``extra={"job_id": ..., "phase": ...}``. Messages quote text from outside (request keys,
model answers, broker errors): the text format escapes control characters in every record,
so no message can forge a line or send escape sequences to a terminal.

Messages carry no layout; a record may ask for one with ``extra={"layout": ...}``, which
only the text format draws: ``"banner"`` (a step heading, between two rules of ``=``) or
``"indented"`` (a detail of the line above). Times are UTC in both formats.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from types import TracebackType
from typing import Literal

LogFormat = Literal["text", "json"]
# what sys.exc_info() returns, as logging.Formatter.formatException takes it
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
# The record's own attributes, and the layout: what the JSON object leaves out of the extras.
_LEFT_OUT = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "layout"}
# C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(job_id)s] %(message)s"
BANNER_RULE = "=" * 60
INDENT = "  "


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
    """One line per record with its message and job id escaped (:func:`printable`), in the
    record's layout (a banner is three lines); the lines of a traceback are indented, so none
    of them can pass for a record of its own."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        shown = logging.makeLogRecord(vars(record))
        shown.job_id = printable(str(getattr(record, "job_id", "-")))
        message = printable(record.message)
        layout = getattr(record, "layout", None)
        if layout == "banner":
            return "\n".join(self._line(shown, m) for m in (BANNER_RULE, message, BANNER_RULE))
        return self._line(shown, INDENT + message if layout == "indented" else message)

    def _line(self, shown: logging.LogRecord, message: str) -> str:
        shown.message = message
        return super().formatMessage(shown)

    def formatException(self, ei: ExcInfo) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join(INDENT + printable(line) for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the message as logged, the extra fields beside it (the
    layout, which is the text format's, left out)."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _LEFT_OUT})
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
