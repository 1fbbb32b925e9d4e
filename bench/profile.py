"""Where the daemon's event-loop thread spends its time: a pyinstrument session grouped by
module family (store, Kafka, model client, prompt building, ...), the top functions, and
the text profile for ``bench/profile.txt``.

A sample's time goes to the innermost frame on its stack that belongs to a family: time in
``json`` or ``pydantic`` called from the store counts as store, a log call from the job
runner counts as logging. Time in the selector's ``select`` is the loop waiting: idle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pyinstrument.frame import Frame
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from bench.procs import ROOT

IDLE = "idle (the event loop waiting in select)"
OTHER = "other (event loop, asyncio, the rest)"
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "store (daemon.store, sqlite-utils, sqlite3)",
        ("/daemon/store/", "/daemon/records.py", "/sqlite_utils/", "/sqlite3/"),
    ),
    (
        "Kafka (aiokafka, daemon.outbox, daemon.intake)",
        ("/aiokafka/", "/daemon/outbox.py", "/daemon/intake.py", "/daemon/kafka.py"),
    ),
    (
        "model client (anthropic SDK, aiohttp, httpx2, daemon.llm)",
        (
            "/anthropic/",
            "/aiohttp/",
            "/aiohappyeyeballs/",
            "/multidict/",
            "/yarl/",
            "/httpx2/",
            "/httpcore2/",
            "/h11/",
            "/anyio/",
            "/sniffio/",
            "/jiter/",
            "/truststore/",
            "/daemon/llm.py",
            "/daemon/streaming.py",
        ),
    ),
    (
        "prompts and generation (daemon.prompts, daemon.generation, checks, paths)",
        (
            "/daemon/prompts.py",
            "/daemon/generation.py",
            "/daemon/answers.py",
            "/daemon/callpolicy.py",
            "/daemon/checks/",
            "/daemon/paths.py",
            "/daemon/states/",
        ),
    ),
    (
        "jobs, state machine, scheduler (daemon.jobs, daemon.machine, transitions)",
        (
            "/daemon/jobs.py",
            "/daemon/scheduler.py",
            "/daemon/machine.py",
            "/transitions/",
            "/daemon/ratelimit.py",
            "/daemon/service.py",
        ),
    ),
    ("logging (logging, daemon.logs)", ("/logging/", "/daemon/logs.py", "/daemon/steplog.py")),
)
TOP_FUNCTIONS = 20


@dataclass
class ProfileSummary:
    duration_s: float
    busy_s: float
    idle_s: float
    connecting_s: float  # opening HTTP connections to the model server
    families: list[tuple[str, float]]  # busy seconds per family, largest first
    top_self: list[tuple[str, float]]  # functions by their own time
    top_daemon: list[tuple[str, float]]  # daemon functions by time including callees
    top_calls_out: list[tuple[str, float]]  # what the daemon calls outside itself, inclusive

    def share(self, seconds: float) -> float:
        return seconds / self.busy_s if self.busy_s else 0.0


def family_of(frame: Frame) -> str | None:
    path = frame.file_path or ""
    for name, fragments in FAMILIES:
        if any(fragment in path for fragment in fragments):
            return name
    return None


def _is_idle(frame: Frame) -> bool:
    return frame.function == "select" and (frame.file_path or "").endswith("selectors.py")


def _label(frame: Frame) -> str:
    if frame.file_path_short == "<built-in>" and frame.parent is not None:
        caller = frame.parent
        return f"{frame.function}  (built-in, from {caller.file_path_short}:{caller.function})"
    return f"{frame.function}  {frame.file_path_short}:{frame.line_no}"


def _opens_connection(frame: Frame) -> bool:
    """A new HTTP connection to the model server, with either of the SDK's transports."""
    path = frame.file_path or ""
    return (frame.function == "_connect" and "/httpcore2/" in path) or (
        frame.function == "_create_connection" and "/aiohttp/connector.py" in path
    )


def _is_glue(frame: Frame) -> bool:
    """``with`` blocks' plumbing: what matters is what they call."""
    return (frame.file_path or "").endswith("contextlib.py")


def _caller(frame: Frame) -> Frame | None:
    caller = frame.parent
    while caller is not None and _is_glue(caller):
        caller = caller.parent
    return caller


def _is_daemon(frame: Frame | None) -> bool:
    if frame is None:
        return False
    return (frame.file_path or "").startswith(str(ROOT / "daemon"))


class _Tally:
    """One pass over the call tree, adding each frame's time where it belongs."""

    def __init__(self) -> None:
        self.families: Counter[str] = Counter()
        self.own: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.calls_out: Counter[str] = Counter()
        self.idle_s = self.connecting_s = 0.0

    def walk(self, root: Frame) -> None:
        # (frame, innermost family above it, labels already counted on this path)
        stack: list[tuple[Frame, str, frozenset[str]]] = [(root, OTHER, frozenset())]
        while stack:
            frame, inherited, on_path = stack.pop()
            if _is_idle(frame):
                self.idle_s += frame.time
                continue
            family = family_of(frame) or inherited
            on_path = self.add(frame, family, on_path)
            children = (c for c in frame.children if not c.is_synthetic)
            stack.extend((child, family, on_path) for child in children)

    def add(self, frame: Frame, family: str, on_path: frozenset[str]) -> frozenset[str]:
        label = _label(frame)
        self.families[family] += frame.total_self_time
        self.own[label] += frame.total_self_time
        if _opens_connection(frame):
            self.connecting_s += frame.time
        if label in on_path:  # recursion: counted at the outer call already
            return on_path
        if _is_daemon(frame):
            self.inclusive[label] += frame.time
        elif not _is_glue(frame) and _is_daemon(_caller(frame)):
            self.calls_out[label] += frame.time
        else:
            return on_path
        return on_path | {label}


def summarise(session: Session) -> ProfileSummary:
    root = session.root_frame()
    tally = _Tally()
    if root is not None:
        tally.walk(root)
    return ProfileSummary(
        duration_s=root.time if root else 0.0,
        busy_s=sum(tally.families.values()),
        idle_s=tally.idle_s,
        connecting_s=tally.connecting_s,
        families=tally.families.most_common(),
        top_self=tally.own.most_common(TOP_FUNCTIONS),
        top_daemon=tally.inclusive.most_common(TOP_FUNCTIONS),
        top_calls_out=tally.calls_out.most_common(TOP_FUNCTIONS),
    )


def _listing(rows: list[tuple[str, float]], busy_s: float) -> list[str]:
    return [f"{100 * s / busy_s:6.1f}%  {s:8.3f} s  {name}" for name, s in rows]


def render_text(session: Session, summary: ProfileSummary, title: str) -> str:
    """The split by module family, the top functions, then pyinstrument's call tree
    (library frames folded)."""
    busy = summary.busy_s or 1.0
    lines = [
        title,
        "",
        f"busy {summary.busy_s:.3f} s, idle in select {summary.idle_s:.3f} s "
        f"(percentages below are of busy time)",
        "",
        "== by module family (innermost family on the stack) ==",
        *_listing(summary.families, busy),
        "",
        "== functions by own time ==",
        *_listing(summary.top_self, busy),
        "",
        "== daemon functions by time including callees ==",
        *_listing(summary.top_daemon, busy),
        "",
        "== calls from the daemon into libraries, by time including callees ==",
        *_listing(summary.top_calls_out, busy),
        "",
        "== call tree ==",
        ConsoleRenderer(unicode=True, color=False, time="percent_of_total").render(session),
    ]
    return "\n".join(lines)


def load(path: Path) -> Session:
    return Session.load(path)
