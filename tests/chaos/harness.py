"""The chaos harness: the real daemon in subprocesses, killed and restarted, and the
invariants that must hold afterwards, checked from the events topic (raw, duplicates
included), the store and what the Messages API server received and sent.

Requests map to jobs through the ``Project: <name>`` line of their prompt: every job of
a run has its own project name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.contract import Event
from daemon.outputs import output_folder
from daemon.states import PHASE_BY_NAME, PHASE_NAMES
from daemon.store import Store
from tests.support.messages_server import CHARS_PER_TOKEN, MessagesServer, Recorded, request_text
from tests.support.processes import (
    daemon_env,
    kill,
    settings_from,
    spawn,
    stop,
    wait_ready,
)
from tests.support.topics import TopicNames, produce, raw_events

PROJECT_LINE = re.compile(r"^Project: (\S+)$", re.MULTILINE)
FILE_PHASES = tuple(name for name in PHASE_NAMES if PHASE_BY_NAME[name].produces_files)
TERMINAL_STATES = ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED")
FINISH_TIMEOUT_S = 120.0
READ_EVENTS_TIMEOUT_S = 60.0


def phase_files(per_phase: int, chars: int) -> dict[str, list[tuple[str, str]]]:
    """``per_phase`` files of about ``chars`` characters for every phase that writes files."""
    files = {}
    for phase in FILE_PHASES:
        listing = []
        for n in range(1, per_phase + 1):
            path = f"{phase.lower()}/part_{n:02d}.txt"
            line = f"{path}: line of generated content\n"
            listing.append((path, line * max(1, chars // len(line))))
        files[phase] = listing
    return files


def hook(point: str, after: int) -> dict[str, str]:
    """The environment that arms a daemon's chaos hook: it kills itself the ``after``-th time
    it passes ``point``."""
    return {"CODEGEND_CHAOS_POINT": point, "CODEGEND_CHAOS_AFTER": str(after)}


def file_object(path: str, content: str) -> str:
    """A file as it appears in the server's answer text."""
    return json.dumps({"path": path, "content": content})


@dataclass
class Start:
    """One daemon process of a run."""

    process: subprocess.Popen[bytes]
    spawned_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    returncode: int | None = None


@dataclass
class Figures:
    kills: int
    starts: int
    jobs: int
    events_raw: int
    events_distinct: int
    requests: int
    repeated_calls_for_committed_files: int
    requests_naming_committed_files: int
    answer_chars: int
    respent_file_chars: int
    respent_plan_chars: int
    cut_tail_chars: int
    kills_cutting_calls: int
    restart_to_first_call_s: list[float] = field(default_factory=list)
    restart_to_ready_s: list[float] = field(default_factory=list)

    @property
    def respent_file_tokens(self) -> int:
        return self.respent_file_chars // CHARS_PER_TOKEN

    @property
    def respent_plan_tokens(self) -> int:
        return self.respent_plan_chars // CHARS_PER_TOKEN

    def summary(self, wall_s: float | None = None) -> str:
        def spread(values: list[float]) -> str:
            if not values:
                return "n/a"
            return (
                f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
                f"max {max(values):.2f} s over {len(values)} restarts"
            )

        lines = [
            f"kills survived: {self.kills} (daemon starts: {self.starts}; "
            f"{self.kills_cutting_calls} kills cut a streaming answer)",
            f"jobs: {self.jobs}, all completed",
            f"events on the topic: {self.events_raw} ({self.events_distinct} distinct, "
            f"{self.events_raw - self.events_distinct} re-published duplicates)",
            f"model calls: {self.requests}, answer characters sent: {self.answer_chars} "
            f"(~{self.answer_chars // CHARS_PER_TOKEN} tokens)",
            f"repeated calls for committed files: {self.repeated_calls_for_committed_files} "
            f"({self.requests_naming_committed_files} calls resumed a phase naming its "
            "committed files)",
            f"tokens re-spent after a crash: {self.respent_file_tokens} on files "
            f"({self.respent_file_chars} chars; the broken calls' cut tails: "
            f"{self.cut_tail_chars} chars), "
            f"{self.respent_plan_tokens} on ARCH plans ({self.respent_plan_chars} chars)",
            f"restart to first resumed model call: {spread(self.restart_to_first_call_s)}",
            f"restart to ready: {spread(self.restart_to_ready_s)}",
        ]
        if wall_s is not None:
            lines.append(f"wall time: {wall_s:.1f} s")
        return "\n".join("chaos: " + line for line in lines)


class Chaos:
    """One run: its environment, the jobs it submitted, the daemons it started."""

    def __init__(
        self,
        tmp_path: Path,
        kafka_bootstrap: str,
        topic_names: TopicNames,
        server: MessagesServer,
        **env: str,
    ) -> None:
        self.server = server
        defaults = {
            "CODEGEND_KAFKA__TOPIC_PARTITIONS": "2",
            "CODEGEND_LLM__TIMEOUT_S": "30",
        }
        self.variables = daemon_env(
            tmp_path, kafka_bootstrap, topic_names, server.url, **{**defaults, **env}
        )
        self.settings = settings_from(self.variables)
        self.store_path = self.settings.store.path
        self.log_path = tmp_path / "daemon.log"
        self.projects: list[str] = []
        self.starts: list[Start] = []
        self.events: dict[str, list[Event]] = {}  # per job, distinct, in seq order (check())

    # -- requests

    def submit(self, count: int, with_request_id: bool = True) -> list[str]:
        """Produce ``count`` requests, each for a project of its own."""
        names = [f"p{len(self.projects) + i + 1:03d}" for i in range(count)]
        values = [self.request(name, with_request_id) for name in names]
        asyncio.run(produce(self.settings, *values))
        self.projects.extend(names)
        return names

    @staticmethod
    def request(project: str, with_request_id: bool = True) -> bytes:
        request: dict[str, Any] = {
            "project_name": project,
            "mockup": {"kind": "text", "description": f"A dashboard for {project}"},
        }
        if with_request_id:
            request["request_id"] = f"chaos-{project}"
        return json.dumps(request).encode()

    # -- daemons

    def spawn(self, **env: str) -> subprocess.Popen[bytes]:
        """Start a daemon (``env`` arms its chaos hook, say); do not wait for it."""
        process = spawn({**self.variables, **env}, self.log_path)
        self.starts.append(Start(process, time.time()))
        return process

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        """Start a daemon and wait until it is ready."""
        process = self.spawn(**env)
        self.wait_ready(process)
        return process

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        start = self._start_of(process)
        wait_ready(process, self.variables, self.log_path)
        start.ready_at = time.time()

    def _start_of(self, process: subprocess.Popen[bytes]) -> Start:
        return next(s for s in self.starts if s.process is process)

    def ended(self, process: subprocess.Popen[bytes], returncode: int) -> int:
        start = self._start_of(process)
        start.ended_at, start.returncode = time.time(), returncode
        return returncode

    def kill(self, process: subprocess.Popen[bytes]) -> int:
        """SIGKILL the daemon by its pid; fail with its log if it had exited on its own."""
        if process.poll() is not None:
            raise AssertionError(
                f"the daemon exited by itself ({process.returncode}):\n{self.log_tail()}"
            )
        return self.ended(process, kill(process))

    def wait_exit(self, process: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
        return self.ended(process, process.wait(timeout=timeout_s))

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        return self.ended(process, stop(process))

    def kill_leftovers(self) -> None:
        for start in self.starts:
            if start.process.poll() is None:
                kill(start.process)

    def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """Run an unhooked daemon until every submitted job has ended and every event is
        published, then stop it with SIGTERM (it must exit 0)."""
        process = self.start()
        deadline = time.monotonic() + timeout_s
        while not self.all_done():
            if process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({process.returncode}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill(process)
                raise AssertionError(f"jobs not done after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.1)
        assert self.stop(process) == 0, self.log_tail()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- the store, read while daemons write it

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.store_path, timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.store_path.exists():
            return []
        try:
            with self._db() as conn:
                return conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError:  # the daemon has not created the tables yet
            return []

    def states(self) -> dict[str, str]:
        """Each project's job state (a project with no job yet is missing)."""
        return dict(self.query("SELECT project_name, state FROM jobs"))

    def unfinished(self) -> int:
        states = self.states()
        return sum(1 for name in self.projects if states.get(name) not in TERMINAL_STATES)

    def backlog(self) -> int:
        rows = self.query("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return rows[0][0] if rows else 0

    def completed_phases(self) -> int:
        rows = self.query("SELECT count(*) FROM phases WHERE status = 'completed'")
        return rows[0][0] if rows else 0

    def all_done(self) -> bool:
        return self.unfinished() == 0 and self.backlog() == 0

    # -- the invariants

    def check(self, status: str = "completed") -> Figures:
        """Every invariant of a run that is over; returns its figures."""
        events = asyncio.run(raw_events(self.settings, READ_EVENTS_TIMEOUT_S))
        store = Store(self.store_path)
        try:
            jobs = self._check_jobs(store, status)
            distinct = self._check_events(store, jobs, events, status)
            if status == "completed":
                self._check_output(store, jobs)
            committed = self._committed_files(store)
        finally:
            store.close()
        requests = self.server.requests
        repeated, naming = _repeated_calls(requests, jobs, committed)
        assert repeated == [], f"calls asked again for committed files: {repeated[:10]}"
        respent_files, respent_plans, tails = _respent(
            requests, jobs, self.server.phase_files, committed
        )
        assert respent_files <= tails, "more was sent again than the cut tails of broken calls"
        return Figures(
            kills=sum(1 for s in self.starts if s.returncode == -9),
            starts=len(self.starts),
            jobs=len(jobs),
            events_raw=len([e for e in events if e.job_id in jobs.values()]),
            events_distinct=distinct,
            requests=len(requests),
            repeated_calls_for_committed_files=len(repeated),
            requests_naming_committed_files=naming,
            answer_chars=sum(r.delivery.chars_sent for r in requests),
            respent_file_chars=respent_files,
            respent_plan_chars=respent_plans,
            cut_tail_chars=tails,
            kills_cutting_calls=self._kills_cutting_calls(requests),
            restart_to_first_call_s=self._restart_to_first_call(requests),
            restart_to_ready_s=self._restart_to_ready(),
        )

    def _check_jobs(self, store: Store, status: str) -> dict[str, str]:
        """One job per submitted project, each ended in ``status``; returns project -> job id."""
        rows = store.jobs()
        counts = Counter(row["project_name"] for row in rows)
        assert counts == Counter(self.projects), f"jobs per project: {counts}"
        jobs = {row["project_name"]: row["job_id"] for row in rows}
        for row in rows:
            assert row["state"] == status.upper(), (row, self.log_tail())
            if status == "completed":
                phases = {p.phase: p.status for p in store.phases(row["job_id"])}
                assert set(phases.values()) == {"completed"}, phases
        assert store.outbox_backlog() == 0
        return jobs

    def _check_events(
        self, store: Store, jobs: dict[str, str], events: list[Event], status: str
    ) -> int:
        """Per job: an event_id always carries the same event; distinct events have seq
        1..n, first published in that order; one accepted, one completed, one completed
        event per phase listing the phase's files. Returns the number of distinct events."""
        by_job: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_job[event.job_id].append(event)
        last_seq = dict(store.db.conn.execute("SELECT job_id, last_seq FROM sequences").fetchall())
        distinct_total = 0
        for job_id in jobs.values():
            first: dict[str, Event] = {}
            for event in by_job[job_id]:
                if event.event_id in first:
                    assert event == first[event.event_id], "an event_id came back changed"
                else:
                    first[event.event_id] = event
            seqs = [e.seq for e in first.values()]  # in order of first publication
            assert seqs == list(range(1, len(seqs) + 1)), (job_id, seqs)
            assert len(seqs) == last_seq[job_id]
            distinct = list(first.values())
            distinct_total += len(distinct)
            self.events[job_id] = distinct
            _check_job_events(store, job_id, distinct, status)
        return distinct_total

    def _check_output(self, store: Store, jobs: dict[str, str]) -> None:
        """The files of every job are in output.dir as in the store."""
        for job_id in jobs.values():
            root = self.settings.output.dir / output_folder(job_id)
            on_disk = {
                str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*")
                if p.is_file()
            }
            assert on_disk == {f.path: f.sha256 for f in store.files(job_id)}, job_id

    @staticmethod
    def _committed_files(store: Store) -> dict[tuple[str, str], list[tuple[str, float]]]:
        rows = store.db.conn.execute(
            "SELECT job_id, phase, path, committed_at FROM files"
        ).fetchall()
        committed: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
        for job_id, phase, path, at in rows:
            committed[(job_id, phase)].append((path, at))
        return committed

    def _restart_to_first_call(self, requests: list[Recorded]) -> list[float]:
        """For every start after a kill: how long until its first model call, if it made one."""
        times = sorted(r.received_at for r in requests)
        found = []
        for before, start in zip(self.starts, self.starts[1:], strict=False):
            if before.returncode != -9:
                continue
            end = start.ended_at or float("inf")
            first = next((t for t in times if t >= start.spawned_at), None)
            if first is not None and first < end:
                found.append(first - start.spawned_at)
        return found

    def _kills_cutting_calls(self, requests: list[Recorded]) -> int:
        """Kills that found an answer streaming in (one that never finished)."""
        return sum(
            1
            for start in self.starts
            if start.returncode == -9
            and any(
                start.spawned_at <= r.received_at < (start.ended_at or 0)
                and not r.delivery.finished
                for r in requests
            )
        )

    def _restart_to_ready(self) -> list[float]:
        return [
            start.ready_at - start.spawned_at
            for before, start in zip(self.starts, self.starts[1:], strict=False)
            if before.returncode == -9 and start.ready_at is not None
        ]


def _check_job_events(store: Store, job_id: str, events: list[Event], status: str) -> None:
    kinds = Counter(e.type for e in events)
    assert kinds["job.accepted"] == 1, (job_id, kinds)
    assert kinds["job.completed"] == 1, (job_id, kinds)
    assert events[-1].type == "job.completed" and events[-1].status == status
    completed = [e for e in events if e.type == "phase.completed"]
    if status != "completed":
        return
    phases = Counter(e.phase for e in completed)
    assert phases == Counter(store.job(job_id).planned), (job_id, phases)
    for event in completed:
        stored = {f.path: f.sha256 for f in store.files(job_id, event.phase)}
        assert {f.path: f.sha256 for f in event.files or []} == stored, (job_id, event.phase)


def _job_of(request: Recorded, jobs: dict[str, str]) -> str | None:
    found = PROJECT_LINE.search(request_text(request.body))
    return jobs.get(found.group(1)) if found else None


def _repeated_calls(
    requests: list[Recorded],
    jobs: dict[str, str],
    committed: dict[tuple[str, str], list[tuple[str, float]]],
) -> tuple[list[tuple[str, str, str]], int]:
    """Files committed before a call of their phase arrived that the call did not name as
    done (so it asked for them again); and how many calls named committed files."""
    repeated = []
    naming = 0
    for request in requests:
        job_id = _job_of(request, jobs)
        assert job_id is not None and request.phase is not None, "a call of no known job"
        text = request_text(request.body)
        named = {line[2:] for line in text.splitlines() if line.startswith("- ")}
        before = [p for p, at in committed[(job_id, request.phase)] if at < request.received_at]
        repeated.extend((job_id, request.phase, p) for p in before if p not in named)
        naming += bool(before)
    return repeated, naming


def _respent(
    requests: list[Recorded],
    jobs: dict[str, str],
    files: dict[str, list[tuple[str, str]]],
    committed: dict[tuple[str, str], list[tuple[str, float]]],
) -> tuple[int, int, int]:
    """Answer characters sent again after a crash: for every file, what was sent of it over
    all calls minus one whole delivery; for ARCH plans, all but the last delivery. Also the
    cut tails: what each broken call sent after the last file it got committed (the whole
    answer, for a plan), which is the most that may be sent again."""
    sent: Counter[tuple[str, str]] = Counter()
    whole: dict[tuple[str, str], int] = {}
    plan_sent: Counter[str] = Counter()
    plan_last: dict[str, int] = {}
    tails = 0
    for request, next_at in _with_next_call(requests, jobs):
        job_id = _job_of(request, jobs)
        assert job_id is not None
        delivery = request.delivery
        if request.phase not in FILE_PHASES:
            plan_sent[job_id] += delivery.chars_sent
            if delivery.finished:
                plan_last[job_id] = delivery.chars_sent
            continue
        # files this call got committed: those first committed between it and the next call
        mine = {
            path
            for path, at in committed[(job_id, str(request.phase))]
            if request.received_at <= at < next_at
        }
        kept_to, lost = 0, False
        for path, content in files.get(str(request.phase), []):
            whole_text = file_object(path, content)
            start = delivery.text.find(whole_text[: whole_text.index('"content"')])
            if start < 0:
                continue
            key = (job_id, path)
            whole[key] = len(whole_text)
            sent[key] += max(0, min(delivery.chars_sent - start, len(whole_text)))
            if path in mine:
                kept_to = max(kept_to, start + len(whole_text))
            lost = lost or path not in mine
        if lost or not delivery.finished:  # broken: sent whole, perhaps, but not all taken
            tails += max(0, delivery.chars_sent - kept_to)
    respent_files = sum(max(0, chars - whole[key]) for key, chars in sent.items())
    respent_plans = sum(max(0, chars - plan_last.get(job, 0)) for job, chars in plan_sent.items())
    return respent_files, respent_plans, tails


def _with_next_call(
    requests: list[Recorded], jobs: dict[str, str]
) -> Iterator[tuple[Recorded, float]]:
    """Each call with the time the next call of its job and phase arrived (or infinity)."""
    later: dict[tuple[str | None, str | None], float] = {}
    paired = []
    for request in sorted(requests, key=lambda r: r.received_at, reverse=True):
        key = (_job_of(request, jobs), request.phase)
        paired.append((request, later.get(key, float("inf"))))
        later[key] = request.received_at
    return reversed(paired)
