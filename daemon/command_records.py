"""The records of the commands topic (docs/cluster-design.md section 5.1): a command that
``codegend cancel`` or ``resume`` sends to a job's partition, and the reply its owner
sends back on the same partition, keyed ``reply/<command_id>``. Pure: bytes in, bytes out.

    {"v": 1, "command_id": "4f0c...", "type": "cancel" | "resume" | "resume_all",
     "job_id": "shop-1" | null, "reason": "codegend resume", "sent_at": 1767200000.0}
    {"v": 1, "command_id": "4f0c...", "ok": true, "message": "shop-1: resumes at BE_ROUTES"}
    {"v": 1, "command_id": "4f0c...", "ok": false, "error": "no job 'shop-1'"}
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

VERSION = 1
CANCEL = "cancel"
RESUME = "resume"
RESUME_ALL = "resume_all"  # every failed, partial or cancelled job of the partition
TYPES = (CANCEL, RESUME, RESUME_ALL)
REPLY_PREFIX = "reply/"
MAX_REASON_CHARS = 200


class BadCommand(ValueError):
    """A record of the commands topic that is not a command this daemon applies; its
    ``command_id`` when it has one (the sender is told why)."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


@dataclass(frozen=True)
class Command:
    command_id: str
    type: str
    job_id: str | None  # None for resume_all
    reason: str
    sent_at: float

    @property
    def key(self) -> bytes | None:
        """The record's key: the job id (none for a partition-wide command)."""
        return None if self.job_id is None else self.job_id.encode()

    def to_bytes(self) -> bytes:
        return _dumped(
            {
                "command_id": self.command_id,
                "type": self.type,
                "job_id": self.job_id,
                "reason": self.reason,
                "sent_at": self.sent_at,
            }
        )


@dataclass(frozen=True)
class Reply:
    command_id: str
    ok: bool
    message: str  # what was done, or (not ok) why nothing was

    @property
    def key(self) -> bytes:
        return reply_key(self.command_id)

    def to_bytes(self) -> bytes:
        said = {"message": self.message} if self.ok else {"error": self.message}
        return _dumped({"command_id": self.command_id, "ok": self.ok, **said})


def new_command(kind: str, job_id: str | None, reason: str) -> Command:
    if kind not in TYPES:
        raise ValueError(f"not a command type: {kind!r}")
    if (job_id is None) != (kind == RESUME_ALL):
        raise ValueError(f"a {kind} command {'has no' if job_id is None else 'names no'} job")
    return Command(uuid.uuid4().hex, kind, job_id, reason, time.time())


def parse_command(value: bytes | None) -> Command:
    """The command a record's value holds; BadCommand says why it is none."""
    try:
        record = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        raise BadCommand("not JSON") from None
    if not isinstance(record, dict):
        raise BadCommand("not a JSON object")
    command_id = record.get("command_id")
    if not isinstance(command_id, str) or not command_id:
        raise BadCommand("no command_id")
    if record.get("v") != VERSION:
        raise BadCommand(f"command version {record.get('v')!r} (this daemon reads 1)", command_id)
    kind, job_id = record.get("type"), record.get("job_id")
    if kind not in TYPES:
        raise BadCommand(f"unknown command type {kind!r}", command_id)
    if kind == RESUME_ALL:
        if job_id is not None:
            raise BadCommand("resume_all names no job", command_id)
    elif not isinstance(job_id, str) or not job_id:
        raise BadCommand(f"a {kind} command needs a job_id", command_id)
    reason = record.get("reason")
    sent_at = record.get("sent_at")
    return Command(
        command_id=command_id,
        type=str(kind),
        job_id=job_id,
        reason=(reason if isinstance(reason, str) and reason else f"codegend {kind}")[
            :MAX_REASON_CHARS
        ],
        sent_at=float(sent_at) if isinstance(sent_at, int | float) else 0.0,
    )


def parse_reply(value: bytes | None) -> Reply | None:
    """The reply a record's value holds; None for a value that is not one."""
    try:
        record = json.loads(value or b"")
        ok = record["ok"]
        said = record["message"] if ok is True else record["error"]
        if not isinstance(record["command_id"], str) or not isinstance(said, str):
            return None
        return Reply(record["command_id"], ok is True, said)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        return None


def reply_key(command_id: str) -> bytes:
    return f"{REPLY_PREFIX}{command_id}".encode()


def is_reply(key: bytes | None) -> bool:
    return key is not None and key.startswith(REPLY_PREFIX.encode())


def _dumped(record: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, **record}, ensure_ascii=False, separators=(",", ":")).encode()
