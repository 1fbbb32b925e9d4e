"""Where each running phase is, kept where a killed process leaves it: the death points.

A daemon killed from outside (``kill -9``, the OOM killer, a node going away) and a phase
that kills the daemon itself (a poison answer that crashes the interpreter) look alike in
the store: the phase is found ``running`` at the next start. What tells them apart is
*where* the phase was when the process died. A poison phase dies at the same point every
time; outside kills land wherever the phase happens to be. A death while the phase waits
(for the rate limiter, the model's first byte, a retry) is no evidence at all: none of the
phase's code runs then.

So every running phase has a slot in a small file beside the store
(``<store>.progress``), rewritten in place with ``os.pwrite`` at each stage of a call and
each piece of a streamed answer: the call within the attempt, the stage (building the
prompt, waiting, reading the answer, or past it: interpreting, checking, committing) and
how many characters of the answer had arrived. A write is one system call into the page cache, which a killed process does not
lose (power loss may, and costs only the distinction, never data). At start the daemon
reads the previous process's points, then starts the file afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
RECORD_BYTES = 96
RESERVED_SLOTS = 64
# The stages of a call: building its prompt; waiting (for the rate limiter, a free slot,
# the model's first byte, or a retry's backoff); reading the streamed answer; past it
# (interpreting, checking, committing).
BUILDING, WAITING, STREAMING, ANSWERED = 0, 1, 2, 3
# Two deaths this close in one call and stage are at the same point: how the network cut
# the stream into pieces varies, what the phase did at a given character does not.
SAME_POINT_CHARS = 128


@dataclass(frozen=True)
class Point:
    """Where a phase was: call ``call`` of its attempt (0: before the first), at ``stage``,
    with ``chars`` characters of that call's answer in."""

    call: int = 0
    stage: int = BUILDING
    chars: int = 0

    @property
    def evidence(self) -> bool:
        """Whether a death here says anything about the phase. While it waits, none of
        its code runs: a death then came from elsewhere."""
        return self.stage != WAITING

    def near(self, other: Point) -> bool:
        return (
            self.call == other.call
            and self.stage == other.stage
            and abs(self.chars - other.chars) <= SAME_POINT_CHARS
        )

    def describe(self) -> str:
        if self.call == 0:
            return "before its first call"
        where = {
            BUILDING: "building its prompt",
            WAITING: "waiting for the model",
            STREAMING: f"at character {self.chars} of the answer",
            ANSWERED: "after its answer",
        }[self.stage]
        return f"in call {self.call}, {where}"


class PhaseProgress(Protocol):
    """A running phase's slot: ``mark`` where it is, ``close`` when it stops running."""

    def mark(self, point: Point) -> None: ...

    def close(self) -> None: ...


def job_key(job_id: str) -> str:
    return hashlib.sha1(job_id.encode()).hexdigest()


class ProgressFile:
    """The slots of this process's running phases; ``previous`` holds where the phases of
    the process before it were when it died, by ``(job_id hash, phase)``."""

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".progress")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise
        self.previous = _parse(os.pread(self._fd, 1 << 20, 0))
        os.ftruncate(self._fd, 0)
        self._write_failed = False
        with contextlib.suppress(OSError):  # room for the usual slots, taken while there is
            os.posix_fallocate(self._fd, 0, RESERVED_SLOTS * RECORD_BYTES)
        self._free: list[int] = []
        self._next = 0

    def enter(self, job_id: str, phase: str) -> PhaseProgress:
        index = self._free.pop() if self._free else self._take_next()
        slot = Slot(self, index, job_key(job_id), phase)
        slot.mark(Point())
        return slot

    def _take_next(self) -> int:
        self._next += 1
        return self._next - 1

    def write(self, index: int, record: bytes) -> None:
        # The file only tells deaths apart: a write that fails (a full disk) never fails a
        # phase; the deaths of this process are then of unknown points, no evidence.
        try:
            os.pwrite(self._fd, record, index * RECORD_BYTES)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("progress file %s not writable (%s)", self.path, exc)

    def release(self, index: int) -> None:
        self.write(index, b" " * (RECORD_BYTES - 1) + b"\n")
        self._free.append(index)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class Slot:
    """One running phase's record in the progress file."""

    def __init__(self, owner: ProgressFile, index: int, key: str, phase: str) -> None:
        self._owner = owner
        self._index = index
        self._prefix = f"{key} {phase:<16} "

    def mark(self, point: Point) -> None:
        line = f"{self._prefix}{point.call} {point.stage} {point.chars}"
        self._owner.write(self._index, line.ljust(RECORD_BYTES - 1).encode() + b"\n")

    def close(self) -> None:
        self._owner.release(self._index)


class NoProgress:
    """Stands in for the progress file where it cannot be used (another process holds it):
    deaths are then told apart by committed files alone."""

    def __init__(self) -> None:
        self.previous: dict[tuple[str, str], Point] = {}

    def enter(self, job_id: str, phase: str) -> PhaseProgress:
        return _NoSlot()

    def close(self) -> None:
        return None


class _NoSlot:
    def mark(self, point: Point) -> None:
        return None

    def close(self) -> None:
        return None


def open_progress(store_path: Path) -> ProgressFile | NoProgress:
    try:
        return ProgressFile(store_path)
    except OSError as exc:
        log.warning(
            "progress file beside %s not usable (%s): a phase's deaths are told apart by its "
            "committed files only",
            store_path,
            exc,
        )
        return NoProgress()


def _parse(data: bytes) -> dict[tuple[str, str], Point]:
    points: dict[tuple[str, str], Point] = {}
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) != 5:
            continue
        try:
            key, phase = fields[0].decode(), fields[1].decode()
            points[(key, phase)] = Point(int(fields[2]), int(fields[3]), int(fields[4]))
        except (UnicodeDecodeError, ValueError):
            continue
    return points
