"""The cluster harness: N real ``codegend run`` daemons in one consumer group on the
session's broker, each with its own store, output folder, ready file and log, killed,
stopped, paused and restarted by pid; and the invariants of docs/cluster-design.md section
7.2, checked from the raw events topic (duplicates included), the Messages API server's
request log and each daemon's own store (read only).

A job's request_id is its message key, its project name and so its job id: calls map to
jobs through the ``Project: <name>`` line of their prompt (as in the chaos harness).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from daemon.contract import Event, parse_event
from daemon.settings import Settings
from daemon.states import PHASE_NAMES
from tests.chaos.harness import Start, _repeated_calls, phase_files
from tests.support.messages_server import MessagesServer
from tests.support.processes import daemon_env, kill, settings_from, spawn, stop, wait_for
from tests.support.processes import wait_ready as wait_ready_file
from tests.support.readiness import READY_FILE_ENV
from tests.support.topics import BOOTSTRAP_ENV, TopicNames, produce_keyed

SIZE = 3
# What a job runs: ARCH, these, then VERIFY (six phases of about a second each), so a job
# takes seconds and a kill finds it mid-run.
JOB_PHASES = ("DB", "BE_CORE", "BE_MODELS", "BE_ROUTES")
FILES_PER_PHASE = 3
FILE_CHARS = 300
# The server's fixed wait before each answer; with the streamed answer a phase takes ~1 s.
ANSWER_LATENCY_S = 0.8
CHUNK_DELAY_S = 0.004
EVENTS_READ_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 30.0
MAX_LISTED = 12  # problem lines in one failure message
TERMINAL_STATES = ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED")
# intake's rebalance listener logs each assignment it gets: "consuming topic:0, topic:2"
ASSIGNED = re.compile(r"\] consuming ?([^(]*?)(?: \(kept .*)?$")


def cluster_server() -> MessagesServer:
    """The local Messages API server: every answer after the same latency, the phases a job
    runs answered with files of known paths (the others plan none)."""
    files = {
        phase: listing if phase in JOB_PHASES else []
        for phase, listing in phase_files(FILES_PER_PHASE, FILE_CHARS).items()
    }
    return MessagesServer(
        latency_s=ANSWER_LATENCY_S, chunk_delay_s=CHUNK_DELAY_S, phase_files=files
    ).start()


def cluster_env(**overrides: str) -> dict[str, str]:
    """The settings every daemon of the tier runs with (design section 7.2), each with why."""
    return {
        # a dead daemon's partitions move after 3 s, not 10 s (tansu holds a new group's
        # first join for half of it, so starts take 1.5 s); a real Kafka refuses less than
        # its group.min.session.timeout.ms, 6 s by default
        "CODEGEND_KAFKA__SESSION_TIMEOUT_MS": "6000" if os.environ.get(BOOTSTRAP_ENV) else "3000",
        # a third of a second's detection after a rebalance starts
        "CODEGEND_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        # several jobs in flight per daemon, few enough to see them move
        "CODEGEND_JOBS__MAX_CONCURRENT": "2",
        # one requests partition per daemon
        "CODEGEND_KAFKA__TOPIC_PARTITIONS": "3",
        **overrides,
    }


@dataclass(frozen=True)
class Published:
    """One record of the events topic, as it is (a re-published duplicate is one too)."""

    partition: int
    offset: int
    event: Event


@dataclass
class Member:
    """One daemon of the cluster: its environment and files, and its processes so far."""

    index: int
    variables: dict[str, str]
    log_path: Path
    store_path: Path
    starts: list[Start] = field(default_factory=list)
    log_mark: int = 0  # the log's size when the current process was spawned

    @property
    def name(self) -> str:
        return f"daemon {self.index}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.starts[-1].process if self.starts else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready_file(self) -> Path:
        return Path(self.variables[READY_FILE_ENV])

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> list[str]:
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace").splitlines()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_since(0)[-lines:]
        return f"--- {self.name} log ({self.log_path}):\n" + "\n".join(text)

    def assignments(self, mark: int | None = None) -> list[set[int]]:
        """The request partitions of each assignment this process logged after ``mark``
        (default: since it was spawned), in order."""
        found = []
        for line in self.log_since(self.log_mark if mark is None else mark):
            if matched := ASSIGNED.search(line):
                names = [n.strip() for n in matched.group(1).split(",") if n.strip()]
                found.append({int(n.rsplit(":", 1)[1]) for n in names})
        return found

    def assigned(self, mark: int | None = None) -> set[int] | None:
        """The partitions of its latest assignment after ``mark`` (None: none logged yet)."""
        found = self.assignments(mark)
        return found[-1] if found else None

    # -- its store, read only, while it may write it

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.store_path.exists():
            return []
        uri = f"file:{self.store_path}?mode=ro"
        try:
            with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
                return conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError:  # the daemon has not created the tables yet
            return []

    def jobs(self) -> set[str]:
        """The jobs its store holds, whatever their state."""
        return {r[0] for r in self.query("SELECT job_id FROM jobs")}

    def running_jobs(self) -> set[str]:
        """The jobs with a phase running, as its store says."""
        return {r[0] for r in self.query("SELECT job_id FROM phases WHERE status = 'running'")}

    def completed_phases(self) -> int:
        rows = self.query("SELECT count(*) FROM phases WHERE status = 'completed'")
        return rows[0][0] if rows else 0

    def unfinished_jobs(self) -> set[str]:
        marks = ", ".join("?" * len(TERMINAL_STATES))
        rows = self.query(f"SELECT job_id FROM jobs WHERE state NOT IN ({marks})", TERMINAL_STATES)
        return {r[0] for r in rows}

    def calls(self, since: float = 0.0) -> Counter[str]:
        """Model calls it made (its store's ``calls`` rows) per job, started at ``since`` or
        later. A call is written with the store's next transaction: a process killed
        mid-call loses the row of the call in flight."""
        rows = self.query("SELECT job_id FROM calls WHERE started_at >= ?", (since,))
        return Counter(r[0] for r in rows)

    def phases_started(self, since: float) -> set[tuple[str, str]]:
        """``(job, phase)`` of the phases its store says it started at ``since`` or later."""
        rows = self.query("SELECT job_id, phase FROM phases WHERE started_at >= ?", (since,))
        return {(r[0], r[1]) for r in rows}

    def published(self, since: float) -> list[tuple[str, str, int, str]]:
        """``(event_id, job, seq, type)`` of the outbox rows it published at ``since`` or later."""
        rows = self.query(
            "SELECT event_id, job_id, seq, type FROM outbox WHERE published_at >= ? ORDER BY id",
            (since,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def metric(self, name: str, labels: str = "") -> float:
        """A sample of its /metrics (0 when absent), found through its ready file."""
        url = json.loads(self.ready_file.read_text())["metrics"]
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        sample = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.M)
        found = sample.search(text)
        return float(found.group(1)) if found else 0.0


@contextmanager
def cluster(root: Path, kafka_bootstrap: str, **env: str) -> Iterator[ClusterHarness]:
    """A cluster (not started) in ``root`` with a Messages API server of its own; after the
    block its daemons still alive are killed by pid and the server stops."""
    server = cluster_server()
    harness = ClusterHarness(root, kafka_bootstrap, server, **env)
    try:
        yield harness
    finally:
        harness.kill_leftovers()
        server.stop()


class ClusterHarness:
    """``size`` daemons in one group on one set of topics, and the jobs submitted to them."""

    def __init__(
        self,
        root: Path,
        kafka_bootstrap: str,
        server: MessagesServer,
        size: int = SIZE,
        **env: str,
    ) -> None:
        self.server = server
        suffix = uuid.uuid4().hex[:12]
        self.topics = TopicNames(
            suffix=suffix,
            requests=f"codegend-requests-{suffix}",
            events=f"codegend-events-{suffix}",
            dlq=f"codegend-dlq-{suffix}",
        )
        overrides = cluster_env(**env)  # daemon_env gives the test's own cluster topics
        self.members: list[Member] = []
        for index in range(size):
            home = root / f"d{index}"
            home.mkdir(parents=True, exist_ok=True)
            # daemon_env: the store, output folder, ready file and metrics port 0 of this
            # member's own, the group and topics shared by all
            variables = daemon_env(home, kafka_bootstrap, self.topics, server.url, **overrides)
            self.members.append(
                Member(
                    index, variables, home / "daemon.log", Path(variables["CODEGEND_STORE__PATH"])
                )
            )
        self.settings: Settings = settings_from(self.members[0].variables)
        self.partitions = self.settings.kafka.topic_partitions
        self.requests: dict[str, int] = {}  # request_id -> its requests partition
        self._names = 0

    # -- daemons

    def spawn(self, i: int) -> subprocess.Popen[bytes]:
        """Start daemon ``i`` (on its store as it is); do not wait for it."""
        member = self.members[i]
        assert not member.alive, f"{member.name} is running already"
        member.log_mark = member.log_size()
        process = spawn(member.variables, member.log_path)
        member.starts.append(Start(process, time.time()))
        return process

    def wait_ready(self, i: int) -> None:
        member = self.members[i]
        process = member.process
        assert process is not None
        try:
            wait_ready_file(process, member.variables, member.log_path)
        except AssertionError:
            raise AssertionError(f"{member.name} did not get ready\n{member.log_tail()}") from None
        member.starts[-1].ready_at = time.time()

    def start(self, i: int) -> None:
        """Start daemon ``i`` and wait for its ready file."""
        self.spawn(i)
        self.wait_ready(i)

    def start_all(self) -> None:
        """Start every daemon at once, wait for their ready files, then until the group's
        assignment gives each its share of the partitions."""
        for i in range(len(self.members)):
            self.spawn(i)
        for i in range(len(self.members)):
            self.wait_ready(i)
        self.wait_balanced()

    def _ended(self, i: int, returncode: int) -> int:
        start = self.members[i].starts[-1]
        start.ended_at, start.returncode = time.time(), returncode
        return returncode

    def kill(self, i: int) -> float:
        """SIGKILL daemon ``i`` by its pid; returns when it died."""
        member = self.members[i]
        process = member.process
        assert process is not None and member.alive, (
            f"{member.name} had exited by itself\n{member.log_tail()}"
        )
        self._ended(i, kill(process))
        assert member.starts[-1].ended_at is not None
        return member.starts[-1].ended_at

    def stop(self, i: int) -> int:
        """SIGTERM daemon ``i`` by its pid and wait for it to exit; its exit code."""
        process = self.members[i].process
        assert process is not None
        return self._ended(i, stop(process))

    def pause(self, i: int) -> None:
        """SIGSTOP daemon ``i``: frozen as a stalled VM is, its sockets open."""
        process = self.members[i].process
        assert process is not None and process.poll() is None
        os.kill(process.pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        process = self.members[i].process
        assert process is not None and process.poll() is None
        os.kill(process.pid, signal.SIGCONT)

    def kill_leftovers(self) -> None:
        """SIGKILL, by pid, every daemon this harness started that still runs (paused too)."""
        for member in self.members:
            for start in member.starts:
                if start.process.poll() is None:
                    kill(start.process)

    def logs(self) -> str:
        return "\n".join(m.log_tail() for m in self.members if m.starts)

    # -- the group

    def live(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    def wait_balanced(self, timeout_s: float = JOIN_TIMEOUT_S) -> dict[int, set[int]]:
        """Wait until every live daemon's latest assignment (since it started) is non-empty,
        and together they hold each partition once; returns them by daemon."""

        def balanced() -> bool:
            latest = [m.assigned() for m in self.live()]
            if any(not found for found in latest):
                return False
            held = [p for found in latest for p in found or ()]
            return sorted(held) == list(range(self.partitions))

        try:
            wait_for(balanced, timeout_s, poll_s=0.1)
        except AssertionError:
            found = {m.name: m.assigned() for m in self.live()}
            raise AssertionError(
                f"the group did not settle in {timeout_s:.0f} s: assignments {found}\n{self.logs()}"
            ) from None
        return {m.index: m.assigned() or set() for m in self.live()}

    def wait_owner(self, partition: int, marks: dict[int, int], timeout_s: float) -> int:
        """Wait until a live daemon logs an assignment holding ``partition`` after its log
        mark in ``marks`` (its log size before the move); returns that daemon's index."""
        owner: list[int] = []

        def assigned() -> bool:
            owner[:] = [
                m.index
                for m in self.live()
                if partition in (m.assigned(marks.get(m.index, m.log_mark)) or ())
            ]
            return bool(owner)

        try:
            wait_for(assigned, timeout_s, poll_s=0.1)
        except AssertionError:
            raise AssertionError(
                f"partition {partition} got no new owner in {timeout_s:.0f} s\n{self.logs()}"
            ) from None
        return owner[0]

    # -- requests

    def request(self, request_id: str) -> bytes:
        return json.dumps(
            {
                "request_id": request_id,
                "project_name": request_id,
                "mockup": {"kind": "text", "description": f"A dashboard for {request_id}"},
                "options": {"phases": list(JOB_PHASES)},
            }
        ).encode()

    def _new_request_id(self) -> str:
        """The next request_id whose key lands on the partition with the fewest jobs, so the
        jobs spread evenly over the partitions (and so over the daemons)."""
        counts = Counter(self.requests.values())
        target = min(range(self.partitions), key=lambda p: (counts[p], p))
        every = list(range(self.partitions))
        while True:
            self._names += 1
            request_id = f"job-{self._names:02d}"
            if DefaultPartitioner()(request_id.encode(), every, every) == target:
                self.requests[request_id] = target
                return request_id

    def submit(self, count: int) -> list[str]:
        """Produce ``count`` keyed requests (key = request_id), spread evenly over the
        partitions; returns their request_ids."""
        ids = [self._new_request_id() for _ in range(count)]
        self.send(*ids)
        return ids

    def send(self, *request_ids: str) -> None:
        """Produce the requests of ``request_ids`` (again, for ids submitted before)."""
        records = [(rid.encode(), self.request(rid)) for rid in request_ids]
        asyncio.run(produce_keyed(self.settings, records))

    # -- the events topic

    def events(self) -> list[Published]:
        """Every record of the events topic now, duplicates included."""
        return asyncio.run(_read_events(self.settings.kafka, EVENTS_READ_TIMEOUT_S))

    def completed(self, events: list[Published] | None = None) -> set[str]:
        """The submitted jobs that have a job.completed event."""
        found = self.events() if events is None else events
        done = {p.event.job_id for p in found if p.event.type == "job.completed"}
        return done & set(self.requests)

    def wait_completed(self, timeout_s: float) -> set[str]:
        """Wait until every submitted job has a job.completed event on the topic, or
        ``timeout_s`` passed; returns the jobs that have none."""
        deadline = time.monotonic() + timeout_s
        while (missing := set(self.requests) - self.completed()) and time.monotonic() < deadline:
            time.sleep(1.0)
        return missing

    # -- who ran what

    def wait_all_running(self, completed: int = 0, timeout_s: float = 30.0) -> dict[int, set[str]]:
        """Wait until every live daemon's store has a phase running and at least
        ``completed`` phases completed; returns the running jobs of each."""
        running: dict[int, set[str]] = {}
        done: dict[int, int] = {}

        def everyone() -> bool:
            live = self.live()
            running.clear()
            running.update({m.index: m.running_jobs() for m in live})
            done.update({m.index: m.completed_phases() for m in live})
            return all(running.values()) and all(done[m.index] >= completed for m in live)

        try:
            wait_for(everyone, timeout_s, poll_s=0.05)
        except AssertionError:
            raise AssertionError(
                f"not every daemon had a phase running and {completed} completed in "
                f"{timeout_s:.0f} s: running {running}, completed {done}\n{self.logs()}"
            ) from None
        return running

    def ran(self) -> dict[int, dict[str, int]]:
        """Per daemon, the model calls its store recorded, per job."""
        return {m.index: dict(sorted(m.calls().items())) for m in self.members}

    # -- the invariants

    def check(
        self, moved: Iterable[str] = (), moved_at: float = 0.0, what: str = "cluster invariants"
    ) -> list[Published]:
        """Every invariant of section 7.2 over the submitted jobs; ``moved`` are the jobs a
        daemon had unfinished when it was killed or stopped at ``moved_at``. Fails with
        every problem found, one line each. Returns the events read."""
        events = self.events()
        problems = job_problems(events, self.requests)
        problems += resumed_problems(events, moved, moved_at)
        problems += repeated_call_problems(events, self.server, self.requests)
        assert_none(what, problems, self)
        return events


# -- the checks: each returns one short line per problem, naming the job


def by_job(events: Iterable[Published]) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = defaultdict(list)
    for published in events:
        found[published.event.job_id].append(published.event)
    return found


def distinct(events: Iterable[Event]) -> dict[str, Event]:
    """The first copy of each event_id."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    return first


def job_problems(events: list[Published], jobs: Iterable[str]) -> list[str]:
    """Per job: one job.accepted event_id; one phase.completed event_id per planned phase;
    seq 1..n without gaps, one event_id per seq, an event_id always the same event; one
    job.completed, status completed, the last seq."""
    found = by_job(events)
    problems: list[str] = []
    for job in sorted(jobs):
        copies = found.get(job, [])
        first = distinct(copies)
        problems += [
            f"{job}: event_id {e.event_id} (seq {e.seq}) came back changed"
            for e in copies
            if e != first[e.event_id]
        ]
        kinds: dict[str, list[Event]] = defaultdict(list)
        for event in first.values():
            kinds[event.type].append(event)
        accepted = kinds["job.accepted"]
        if len(accepted) != 1:
            problems.append(f"{job}: {len(accepted)} job.accepted event_ids (want 1)")
        if accepted:
            problems += _phase_problems(job, accepted[0].phases, kinds["phase.completed"])
        problems += _seq_problems(job, first.values())
        problems += _end_problems(job, kinds["job.completed"], first.values())
    return problems


def _phase_problems(job: str, planned: list[str], completions: list[Event]) -> list[str]:
    counts = Counter(e.phase for e in completions)
    problems = []
    if missing := [p for p in planned if not counts[p]]:
        problems.append(f"{job}: no phase.completed for {', '.join(missing)}")
    problems += [
        f"{job}: {counts[p]} phase.completed event_ids for {p} (want 1)"
        for p in planned
        if counts[p] > 1
    ]
    problems += [f"{job}: phase.completed for {p}, not planned" for p in counts if p not in planned]
    return problems


def _seq_problems(job: str, events: Iterable[Event]) -> list[str]:
    ids_by_seq: dict[int, set[str]] = defaultdict(set)
    for event in events:
        ids_by_seq[event.seq].add(event.event_id)
    problems = [
        f"{job}: seq {seq} has {len(ids)} event_ids"
        for seq, ids in sorted(ids_by_seq.items())
        if len(ids) > 1
    ]
    last = max(ids_by_seq, default=0)
    if missing := sorted(set(range(1, last + 1)) - set(ids_by_seq)):
        problems.append(f"{job}: seqs {_ranges(missing)} missing of 1..{last}")
    return problems


def _end_problems(job: str, completions: list[Event], events: Iterable[Event]) -> list[str]:
    if not completions:
        return [f"{job}: no job.completed"]
    if len(completions) > 1:
        return [f"{job}: {len(completions)} job.completed event_ids (want 1)"]
    end = completions[0]
    last = max(e.seq for e in events)
    problems = [] if end.status == "completed" else [f"{job}: ended {end.status}"]
    if end.seq != last:
        problems.append(f"{job}: job.completed is seq {end.seq}, not the last ({last})")
    return problems


def resumed_problems(events: list[Published], moved: Iterable[str], after: float) -> list[str]:
    """Every moved job has exactly one job.resumed event_id with reason failover dated
    after the move."""
    found = by_job(events)
    problems = []
    for job in sorted(moved):
        resumed = [
            e
            for e in distinct(found.get(job, [])).values()
            if e.type == "job.resumed" and e.reason == "failover" and e.ts.timestamp() >= after
        ]
        if len(resumed) != 1:
            problems.append(
                f"{job}: {len(resumed)} job.resumed reason=failover after the move (want 1)"
            )
    return problems


def committed_files(events: Iterable[Published]) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """Per (job, phase), each file its phase.completed events list, with the event's time:
    the file was committed by then (the stores differ per daemon; the topic is shared)."""
    committed: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for event in distinct(p.event for p in events).values():
        if event.type == "phase.completed":
            at = event.ts.timestamp()
            committed[(event.job_id, event.phase)] += [(f.path, at) for f in event.files or []]
    return committed


def repeated_call_problems(
    events: list[Published], server: MessagesServer, jobs: Iterable[str]
) -> list[str]:
    """No model call asked for a file whose phase.completed event was dated before the
    call arrived (the call did not list it as produced)."""
    repeated, _ = _repeated_calls(
        server.requests, {job: job for job in jobs}, committed_files(events)
    )
    paths: dict[tuple[str, str], list[str]] = defaultdict(list)
    for job, phase, path in repeated:
        paths[(job, phase)].append(path)
    return [
        f"{job}: a call of {phase} asked again for committed {_listed(sorted(set(found)))}"
        for (job, phase), found in sorted(paths.items())
    ]


def phase_started_problems(events: list[Published], jobs: Iterable[str]) -> list[str]:
    """Each planned phase of each job has exactly one phase.started event_id: none ran twice."""
    found = by_job(events)
    problems = []
    for job in sorted(jobs):
        first = distinct(found.get(job, [])).values()
        planned = next((e.phases for e in first if e.type == "job.accepted"), [])
        counts = Counter(e.phase for e in first if e.type == "phase.started")
        problems += [
            f"{job}: {counts[phase]} phase.started event_ids for {phase} (want 1)"
            for phase in planned
            if counts[phase] != 1
        ]
    return problems


def silence_problems(
    member: Member,
    since: float,
    moved: Iterable[str],
    before: list[Published],
    after: list[Published],
) -> list[str]:
    """A daemon restarted at ``since`` on its old store after its jobs ``moved``: it called
    the model for none of them, started none of their phases, published nothing for them
    and no event_id that was not on the topic ``before``; and nobody else published a new
    event after it (every job had ended)."""
    moved = set(moved)
    valid = {p.event.event_id for p in before}
    name = f"the restarted {member.name}"
    problems = [
        f"{job}: {n} model calls from {name}"
        for job, n in sorted(member.calls(since).items())
        if job in moved
    ]
    started: dict[str, list[str]] = defaultdict(list)
    for job, phase in member.phases_started(since):
        started[job].append(phase)
    problems += [
        f"{job}: {name} started {', '.join(sorted(phases, key=PHASE_NAMES.index))}"
        for job, phases in sorted(started.items())
        if job in moved
    ]
    published = member.published(since)
    new: dict[str, list[int]] = defaultdict(list)
    again: dict[str, list[int]] = defaultdict(list)
    for event_id, job, seq, _ in published:
        if event_id not in valid:
            new[job].append(seq)
        elif job in moved:
            again[job].append(seq)
    problems += [
        f"{job}: {name} published {len(seqs)} new event_ids (seq {_ranges(sorted(seqs))})"
        for job, seqs in sorted(new.items())
    ]
    problems += [
        f"{job}: {name} re-published {len(seqs)} events (seq {_ranges(sorted(seqs))})"
        for job, seqs in sorted(again.items())
    ]
    theirs = {event_id for event_id, *_ in published}
    others: dict[str, list[int]] = defaultdict(list)
    for event in distinct(p.event for p in records_after(after, before)).values():
        if event.event_id not in valid | theirs:
            others[event.job_id].append(event.seq)
    problems += [
        f"{job}: {len(seqs)} new event_ids from another daemon after the restart "
        f"(seq {_ranges(sorted(seqs))})"
        for job, seqs in sorted(others.items())
    ]
    return problems


def assert_none(what: str, problems: list[str], cluster: ClusterHarness | None = None) -> None:
    """Fail with the problems, one a line (the first MAX_LISTED), and who ran what."""
    if not problems:
        return
    # a job's lines together, in the order found
    lines = sorted(problems, key=lambda line: line.split(":", 1)[0])[:MAX_LISTED]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more")
    if cluster is not None:
        lines.append(f"model calls per daemon and job: {cluster.ran()}")
    raise AssertionError(f"{what}: {len(problems)} problems\n  " + "\n  ".join(lines))


def _listed(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``3-5, 9``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


async def _read_events(kafka: Any, timeout_s: float) -> list[Published]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(kafka.events_topic, p)
            for p in sorted(consumer.partitions_for_topic(kafka.events_topic) or [])
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Published] = []
        async with asyncio.timeout(timeout_s):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    found += [
                        Published(tp.partition, r.offset, parse_event(r.value)) for r in records
                    ]
        return sorted(found, key=lambda p: (p.partition, p.offset))
    finally:
        await consumer.stop()


def records_after(events: list[Published], before: list[Published]) -> list[Published]:
    """The records of ``events`` past the ends ``before`` had, per partition."""
    ends: dict[int, int] = {}
    for published in before:
        ends[published.partition] = max(ends.get(published.partition, -1), published.offset)
    return [p for p in events if p.offset > ends.get(p.partition, -1)]
