"""``python -m bench.failover [--quick] [--out DIR]``: cluster mode measured
(docs/cluster-design.md section 7.4), written to bench/FAILOVER.md.

Real ``codegend run`` processes in cluster mode (``kafka.changelog_topic`` set) on a tansu
broker the benchmark starts on 127.0.0.1, each daemon with its own store; the local
Messages API server runs in this process, so its request log times every model call. Each
figure is measured side by side within the one run:

- time to failover: three daemons, keyed requests over three partitions, one daemon
  SIGKILLed mid-run; from the kill to the first ``job.resumed`` (reason ``failover``) and to
  the first model call of a moved job, split into detection, rebalance, restore and the
  time to the first call (the session timeout at its default; a short one labelled so);
- restore time and changelog bytes read for a partition of 10, 100 (and 1,000) finished jobs;
- changelog bytes per job for the demo job (its cassette replayed);
- throughput of the same 12 jobs with 1, 2 and 3 daemons;
- the cost of cluster mode on one daemon: job latency with the changelog on and off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import failover_report, report
from bench.cluster import (
    Cluster,
    Member,
    Record,
    Restore,
    longest_answer,
    metrics_url,
    read_partition,
)
from bench.harness import Bench, EventLog, Seen
from bench.procs import ROOT, BenchError
from daemon.changelog import parse_key
from daemon.contract import GenerationRequest
from daemon.settings import KafkaSettings
from tests.chaos.harness import phase_files
from tests.support.messages_server import MessagesServer, Recorded, request_text

log = logging.getLogger("bench")
SCENARIOS = ("failover", "restore", "bytes", "throughput", "cost")
# The product's defaults (KafkaSettings): the failover figure is measured with them.
DEFAULT_SESSION_MS = int(KafkaSettings.model_fields["session_timeout_ms"].default)
DEFAULT_HEARTBEAT_MS = int(KafkaSettings.model_fields["heartbeat_interval_ms"].default)
SHORT_SESSION_MS = 3000  # labelled as such: a third of it between heartbeats
SHORT_HEARTBEAT_MS = 1000
# The scenarios that measure no failover start and stop daemons often: a short session
# (tansu holds a join for about a session timeout); it changes nothing they measure.
SETUP_SESSION_MS = 2000
SETUP_HEARTBEAT_MS = 500
# What a job runs: ARCH, these, then VERIFY: six phases, five model calls (VERIFY calls
# the model only to repair what its checks find).
JOB_PHASES = ("DB", "BE_CORE", "BE_MODELS", "BE_ROUTES")
PHASES_PER_JOB = len(JOB_PHASES) + 2
TINY_JOB = ("DB",)  # ARCH, DB, VERIFY: the restore scenario's finished jobs
FILES_PER_PHASE = 3
FILE_CHARS = 300
FAILOVER_LATENCY_S = 0.5
COST_LATENCY_S = 0.2
FAILOVER_JOBS_PER_PARTITION = 2
FAILOVER_MAX_CONCURRENT = 4  # the new owner has slots free for the moved jobs
THROUGHPUT_MAX_CONCURRENT = 2
THROUGHPUT_JOBS_PER_PARTITION = 4
RESTORE_MAX_CONCURRENT = 50
DEMO = "car-management-app"
DEMO_REQUEST = ROOT / "examples" / f"{DEMO}.json"
DEMO_CASSETTE = ROOT / "examples" / "cassettes" / DEMO
REBALANCING = "because it is rebalancing"  # aiokafka's heartbeat warning
JOB_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Sizes:
    kills: int = 3
    short_kills: int = 1
    restore_jobs: tuple[int, ...] = (10, 100, 1000)
    throughput_latency_s: float = 0.5
    cost_repeats: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            kills=1, short_kills=0, restore_jobs=(10, 100), throughput_latency_s=0.2, cost_repeats=1
        )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def model_server() -> MessagesServer:
    """The local Messages API server, in this process: the phases a job runs answered with
    three files of about 300 characters (the other phases plan none)."""
    files = {
        phase: listing if phase in JOB_PHASES else []
        for phase, listing in phase_files(FILES_PER_PHASE, FILE_CHARS).items()
    }
    return MessagesServer(phase_files=files).start()


def job_of(recorded: Recorded) -> str | None:
    """The job a model call is for: the ``Project: <name>`` line of its prompt (the
    project name is the request id, and so the job id)."""
    for line in request_text(recorded.body).splitlines():
        if line.startswith("Project: "):
            return line.removeprefix("Project: ").strip()
    return None


def setup_session() -> dict[str, int]:
    return {"session_timeout_ms": SETUP_SESSION_MS, "heartbeat_interval_ms": SETUP_HEARTBEAT_MS}


async def wait_restored(
    member: Member, partitions: set[int], since: int, timeout_s: float = JOB_TIMEOUT_S
) -> dict[int, Restore]:
    """Until the member logged a restore of each partition after byte ``since``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = {r.partition: r for r in member.restores(since) if r.partition in partitions}
        if len(found) == len(partitions):
            return found
        if not member.alive or time.monotonic() > deadline:
            raise BenchError(f"daemon {member.index} restored {sorted(found)} of {partitions}")
        await asyncio.sleep(0.05)


async def settle(cluster: Cluster, marks: dict[int, int]) -> None:
    """Until the group is balanced and every partition assigned since ``marks`` (each
    member's log size before) is restored."""
    await cluster.wait_balanced()
    for member in cluster.live():
        new = {
            p for a in member.assignments(marks.get(member.index, member.mark)) for p in a.restoring
        }
        current = member.assigned() or frozenset()
        await wait_restored(member, new & current, marks.get(member.index, member.mark))


def job_ids(requests: list[GenerationRequest]) -> set[str]:
    return {str(r.request_id) for r in requests}


def started_jobs(events: EventLog, type_: str) -> set[str]:
    return {s.event.job_id for s in events.by_type[type_]}


# ------------------------------------------------------------------- 1. time to failover


@dataclass
class KillRun:
    session_ms: int
    heartbeat_ms: int
    victim: int
    moved: int  # unfinished jobs of the victim's partitions when it died
    restored_jobs: int
    # seconds from the kill (None: not seen)
    detected_s: float | None  # a survivor's heartbeat told of the rebalance
    assigned_s: float  # the new owner logged its assignment of the partition
    restored_s: float  # ... and the end of its restore
    restore_s: float  # the restore as the daemon measured it
    resumed_s: float  # the first job.resumed (reason failover) of a moved job: its ts
    resumed_seen_s: float  # ... as the client received it
    first_call_s: float  # the first model call of a moved job, from another daemon
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def parts(self) -> dict[str, float | None]:
        """The time to the first call, split: detection (the session timeout and up to a
        heartbeat), rebalance (join and sync), restore, and on to the call."""
        detected = self.detected_s
        return {
            "detection": detected,
            "rebalance": None if detected is None else self.assigned_s - detected,
            "restore": self.restored_s - self.assigned_s,
            "to first call": self.first_call_s - self.restored_s,
        }


@dataclass
class FailoverResult:
    latency_s: float
    jobs: int
    runs: list[KillRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def failover(
    bench: Bench,
    sizes: Sizes,
    server: MessagesServer,
    alongside: asyncio.Task[object] | None = None,
) -> FailoverResult:
    """The kills, with the default session timeout and then a short one; ``alongside``
    runs while the first cluster waits for its group's first join (nothing of the failover
    is measured then)."""
    server.latency_s = FAILOVER_LATENCY_S
    result = FailoverResult(FAILOVER_LATENCY_S, FAILOVER_JOBS_PER_PARTITION * 3)
    plans = [
        ("default", DEFAULT_SESSION_MS, DEFAULT_HEARTBEAT_MS, sizes.kills),
        ("short", SHORT_SESSION_MS, SHORT_HEARTBEAT_MS, sizes.short_kills),
    ]
    for label, session_ms, heartbeat_ms, kills in plans:
        if not kills:
            continue
        alongside, first = None, alongside
        try:
            await _kills(bench, server, result, label, session_ms, heartbeat_ms, kills, first)
        except BenchError as exc:
            result.errors.append(f"session_timeout_ms = {session_ms}: {exc}")
            log.info("failover %s: %s", label, exc)
    return result


async def _kills(
    bench: Bench,
    server: MessagesServer,
    result: FailoverResult,
    label: str,
    session_ms: int,
    heartbeat_ms: int,
    kills: int,
    alongside: asyncio.Task[object] | None,
) -> None:
    """One cluster of three; ``kills`` times: a batch of jobs, SIGKILL one daemon mid-run,
    time the failover, wait for the jobs to end, restart the daemon on its store."""
    cluster = Cluster(
        bench,
        f"failover-{label}",
        3,
        server.url,
        kafka={
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": heartbeat_ms,
            "topic_partitions": 3,
        },
        jobs={"max_concurrent": FAILOVER_MAX_CONCURRENT, "shutdown_grace_s": 5},
    )
    async with cluster:
        started = time.monotonic()
        await asyncio.gather(cluster.start(), alongside or asyncio.sleep(0))
        log.info("failover %s: 3 daemons settled in %.1f s", label, time.monotonic() - started)
        async with cluster.events(bench) as events:
            await _kill_runs(
                cluster, server, events, result, label, session_ms, heartbeat_ms, kills
            )
        await cluster.stop()


async def _kill_runs(
    cluster: Cluster,
    server: MessagesServer,
    events: EventLog,
    result: FailoverResult,
    label: str,
    session_ms: int,
    heartbeat_ms: int,
    kills: int,
) -> None:
    for n in range(kills):
        victim = n % 3
        if n:
            marks = {m.index: m.log_size() for m in cluster.members}
            previous = (n - 1) % 3
            cluster.spawn(previous)
            await cluster.members[previous].process.wait_ready()
            await settle(cluster, marks)
        run = await _kill_run(cluster, server, events, victim, session_ms, heartbeat_ms)
        result.runs.append(run)
        log.info(
            "failover %s, kill %d: first call of a moved job %.2f s after the kill "
            "(job.resumed %.2f s)",
            label,
            n + 1,
            run.first_call_s,
            run.resumed_s,
        )


async def _kill_run(
    cluster: Cluster,
    server: MessagesServer,
    events: EventLog,
    victim: int,
    session_ms: int,
    heartbeat_ms: int,
) -> KillRun:
    requests = cluster.requests(FAILOVER_JOBS_PER_PARTITION, JOB_PHASES)
    ids = job_ids(requests)
    await events.submit(requests)
    # mid-run: every job has committed its first phase (so the victim's have state to
    # restore) and none has ended
    await events.wait_until(
        lambda: ids <= started_jobs(events, "phase.completed"), 60, "every job's first phase"
    )
    held = cluster.members[victim].assigned() or frozenset()
    marks = {m.index: m.log_size() for m in cluster.members}
    killed_at = await cluster.kill(victim)
    moved = {j for j in ids if cluster.partition_of(j) in held} - started_jobs(
        events, "job.completed"
    )
    if not moved:
        raise BenchError(f"daemon {victim} had no unfinished job when it was killed")

    def first_call() -> Recorded | None:
        calls = [r for r in server.requests if r.received_at > killed_at and job_of(r) in moved]
        return min(calls, key=lambda r: r.received_at, default=None)

    def resumed() -> Seen | None:
        found = [
            s
            for s in events.by_type["job.resumed"]
            if s.event.job_id in moved and s.event.reason == "failover"
        ]
        return min(found, key=lambda s: s.event.ts, default=None)

    await events.wait_until(
        lambda: first_call() is not None and resumed() is not None,
        JOB_TIMEOUT_S,
        "a moved job's job.resumed and model call",
    )
    await events.wait_completed(ids, JOB_TIMEOUT_S)
    call, resumed_event = first_call(), resumed()
    assert call is not None and resumed_event is not None
    survivors = [m for m in cluster.members if m.index != victim]
    _, assigned_at, restore = _new_owner(survivors, held, marks)
    return KillRun(
        session_ms=session_ms,
        heartbeat_ms=heartbeat_ms,
        victim=victim,
        moved=len(moved),
        restored_jobs=restore.jobs,
        detected_s=_detected(survivors, marks, killed_at),
        assigned_s=assigned_at - killed_at,
        restored_s=restore.at - killed_at,
        restore_s=restore.seconds,
        resumed_s=resumed_event.event.ts.timestamp() - killed_at,
        resumed_seen_s=resumed_event.at_wall_s - killed_at,
        first_call_s=call.received_at - killed_at,
        statuses=events.statuses(ids),
    )


def _detected(survivors: list[Member], marks: dict[int, int], killed_at: float) -> float | None:
    """When the first survivor learnt of the rebalance (its heartbeat refused), from the kill."""
    times = [
        line.at
        for m in survivors
        for line in m.log(marks[m.index])
        if REBALANCING in line.message and line.at >= killed_at
    ]
    return min(times) - killed_at if times else None


def _new_owner(
    survivors: list[Member], held: frozenset[int], marks: dict[int, int]
) -> tuple[Member, float, Restore]:
    """The survivor that took one of the victim's partitions first: it, when it logged that
    assignment, and its restore of the partition."""
    found = []
    for member in survivors:
        for assignment in member.assignments(marks[member.index]):
            for partition in assignment.restoring & held:
                restores = [
                    r for r in member.restores(marks[member.index]) if r.partition == partition
                ]
                if restores:
                    found.append((assignment.at, member.index, member, restores[0]))
    if not found:
        raise BenchError("no survivor logged a restore of the killed daemon's partitions")
    at, _, member, restore = min(found, key=lambda item: (item[0], item[1]))
    return member, at, restore


# ---------------------------------------------------------------- 2. restore time


@dataclass
class RestoreRun:
    jobs: int  # finished jobs in the partition
    restored_jobs: int  # as the daemon counted them
    records: int  # changelog records read (the partition before the new claim)
    bytes: int  # their keys and values
    seconds: float  # the daemon's figure
    stall_s: float = 0.0  # the longest /healthz answer while the daemon started and restored


@dataclass
class RestoreResult:
    build_s: dict[int, float] = field(default_factory=dict)  # daemon time to run the jobs
    runs: list[RestoreRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def restore_sizes(bench: Bench, sizes: Sizes, server: MessagesServer) -> RestoreResult:
    """One partition; a daemon runs tiny jobs (ARCH, DB, VERIFY) until the partition holds
    the next size, stops; a daemon on a fresh store starts and restores the partition (and
    then runs the next jobs): 10, 100, 1,000 finished jobs."""
    server.latency_s = 0.0
    result = RestoreResult()
    cluster = Cluster(
        bench,
        "restore",
        len(sizes.restore_jobs) + 1,
        server.url,
        kafka={"topic_partitions": 1, **setup_session()},
        jobs={"max_concurrent": RESTORE_MAX_CONCURRENT, "shutdown_grace_s": 5},
    )
    try:
        async with cluster:
            await cluster.start([0])
            async with cluster.events(bench) as events:
                await _restore_runs(bench, cluster, events, sizes, result)
            await cluster.stop()
    except BenchError as exc:
        result.errors.append(str(exc))
        log.info("restore: %s", exc)
    return result


async def _restore_runs(
    bench: Bench, cluster: Cluster, events: EventLog, sizes: Sizes, result: RestoreResult
) -> None:
    total = 0
    for index, size in enumerate(sizes.restore_jobs):
        requests = cluster.requests(size - total, TINY_JOB)
        started = time.monotonic()
        await events.submit(requests)
        await events.wait_completed(job_ids(requests), 600)
        result.build_s[size] = time.monotonic() - started
        total = size
        await cluster.members[index].process.stop()
        topic = cluster.settings.kafka.changelog_topic
        records = await read_partition(bench.bootstrap, topic, 0)  # no writer left
        successor = cluster.members[index + 1]
        cluster.spawn(index + 1)
        await successor.process.wait_ready()
        done = asyncio.Event()
        probe = asyncio.create_task(longest_answer(metrics_url(successor), done))
        try:
            await cluster.wait_balanced()
            [restore] = (await wait_restored(successor, {0}, successor.mark)).values()
        finally:
            done.set()
            stall_s = await probe
        result.runs.append(
            RestoreRun(
                size,
                restore.jobs,
                len(records),
                sum(r.size for r in records),
                restore.seconds,
                stall_s,
            )
        )
        log.info("restore: %d jobs in %.2f s", size, restore.seconds)


async def _settled_partition(
    bench: Bench, cluster: Cluster, partition: int, quiet_s: float = 1.0, timeout_s: float = 30.0
) -> list[Record]:
    """The changelog partition once it stopped growing for ``quiet_s``."""
    topic = cluster.settings.kafka.changelog_topic
    records = await read_partition(bench.bootstrap, topic, partition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        again = await read_partition(bench.bootstrap, topic, partition)
        if len(again) == len(records):
            return again
        records = again
    return records


# --------------------------------------------------------- 3. changelog bytes per job


@dataclass
class KindBytes:
    records: int = 0
    written: int = 0
    kept_records: int = 0  # the latest record of each key, not a tombstone
    kept: int = 0
    same: int = 0  # bytes of records whose value is the key's previous value again


@dataclass
class BytesResult:
    job_id: str = ""
    status: str = ""
    files: int = 0
    wall_s: float = 0.0
    kinds: dict[str, KindBytes] = field(default_factory=dict)
    largest_event: tuple[str, int] = ("", 0)  # what it is (type and phase), its bytes
    error: str = ""

    @property
    def written(self) -> int:
        return sum(k.written for k in self.kinds.values())

    @property
    def kept(self) -> int:
        return sum(k.kept for k in self.kinds.values())

    @property
    def same(self) -> int:
        return sum(k.same for k in self.kinds.values())


async def demo_bytes(bench: Bench, server: MessagesServer) -> BytesResult:
    """The demo job (its cassette replayed: llm.provider = replay) on one daemon in cluster
    mode; its records in the changelog partition, read back with a plain consumer once the
    partition stopped growing."""
    result = BytesResult()
    cluster = Cluster(
        bench,
        "bytes",
        1,
        server.url,
        kafka={"topic_partitions": 1, **setup_session()},
        llm={"provider": "replay", "cassette_dir": DEMO_CASSETTE},
    )
    request = GenerationRequest.model_validate(json.loads(DEMO_REQUEST.read_text()))
    result.job_id = str(request.request_id)
    try:
        async with cluster:
            await cluster.start()
            async with cluster.events(bench) as events:
                submitted = await events.submit([request])
                [done] = await events.wait_completed({result.job_id}, JOB_TIMEOUT_S)
            records = await _settled_partition(bench, cluster, 0)
            await cluster.stop()
    except BenchError as exc:
        result.error = str(exc)
        log.info("bytes: %s", exc)
        return result
    result.wall_s = done.at_s - submitted
    result.status = str(done.event.status)
    result.files = int(getattr(done.event, "files_total", 0) or 0)
    result.kinds = job_bytes(records, result.job_id)
    result.largest_event = largest_event(records, result.job_id)
    log.info("bytes: %d B written, %d B kept for the demo job", result.written, result.kept)
    return result


def largest_event(records: list[Record], job_id: str) -> tuple[str, int]:
    """The job's largest event record: its type and phase, and its bytes."""
    events = [r for r in records if r.name.startswith(f"{job_id}/event/") and r.value]
    if not events:
        return "", 0
    biggest = max(events, key=lambda r: r.size)
    payload = json.loads(biggest.value or b"{}").get("payload", {})
    what = " ".join(str(payload.get(k)) for k in ("phase", "type") if payload.get(k))
    return what, biggest.size


def job_bytes(records: list[Record], job_id: str) -> dict[str, KindBytes]:
    """Per kind of key, the job's records: all written, and the latest of each key that
    is not a tombstone (what compaction keeps)."""
    kinds: dict[str, KindBytes] = {}
    latest: dict[str, Record] = {}
    for record in records:
        if record.name != job_id and not record.name.startswith(f"{job_id}/"):
            continue
        kind = kinds.setdefault(parse_key(record.name).kind, KindBytes())
        kind.records += 1
        kind.written += record.size
        previous = latest.get(record.name)
        if previous is not None and previous.value == record.value:
            kind.same += record.size
        latest[record.name] = record
    for name, record in latest.items():
        if record.value is not None:
            kind = kinds[parse_key(name).kind]
            kind.kept_records += 1
            kind.kept += record.size
    return kinds


# ---------------------------------------------------------------- 4. throughput


@dataclass
class ThroughputRun:
    daemons: int
    jobs: int
    wall_s: float
    jobs_per_daemon: list[int]  # the jobs of each daemon's partitions
    statuses: Counter[str]
    calls: int  # model calls of the batch's jobs (the server's request log)

    @property
    def per_min(self) -> float:
        return 60 * self.jobs / self.wall_s


@dataclass
class ThroughputResult:
    latency_s: float
    max_concurrent: int
    runs: list[ThroughputRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ideal_s(self, run: ThroughputRun) -> float:
        """Every slot of the busiest daemon busy with one call at a time, each job making
        the batch's mean number of calls."""
        busiest = max(run.jobs_per_daemon)
        rounds = -(-busiest // self.max_concurrent)
        return rounds * run.calls / run.jobs * self.latency_s


async def throughput(bench: Bench, sizes: Sizes, server: MessagesServer) -> ThroughputResult:
    """The same 12 keyed jobs (4 per partition) on 3, then 2, then 1 daemon of one group
    (one leaves after each batch), jobs.max_concurrent = 2 per daemon."""
    server.latency_s = sizes.throughput_latency_s
    result = ThroughputResult(sizes.throughput_latency_s, THROUGHPUT_MAX_CONCURRENT)
    cluster = Cluster(
        bench,
        "throughput",
        3,
        server.url,
        kafka={"topic_partitions": 3, **setup_session()},
        jobs={"max_concurrent": THROUGHPUT_MAX_CONCURRENT, "shutdown_grace_s": 5},
    )
    try:
        async with cluster:
            await cluster.start()
            async with cluster.events(bench) as events:
                # a job on each daemon first: connections, imports and caches warm
                warm_up = cluster.requests(1, JOB_PHASES)
                await events.submit(warm_up)
                await events.wait_completed(job_ids(warm_up), JOB_TIMEOUT_S)
                for daemons in (3, 2, 1):
                    if daemons < 3:  # one leaves the group (SIGTERM: it finishes and leaves)
                        marks = {m.index: m.log_size() for m in cluster.members}
                        await cluster.members[daemons].process.stop()
                        await settle(cluster, marks)
                    run = await _batch(cluster, events, server, daemons)
                    result.runs.insert(0, run)
                    log.info("throughput, %d daemons: %.1f jobs/min", daemons, run.per_min)
            await cluster.stop()
    except BenchError as exc:
        result.errors.append(str(exc))
        log.info("throughput: %s", exc)
    return result


async def _batch(
    cluster: Cluster, events: EventLog, server: MessagesServer, daemons: int
) -> ThroughputRun:
    requests = cluster.requests(THROUGHPUT_JOBS_PER_PARTITION, JOB_PHASES)
    ids = job_ids(requests)
    held = [m.assigned() or frozenset() for m in cluster.live()]
    per_daemon = [sum(cluster.partition_of(j) in parts for j in ids) for parts in held]
    submitted = await events.submit(requests)
    done = await events.wait_completed(ids, JOB_TIMEOUT_S * 2)
    wall_s = max(s.at_s for s in done) - submitted
    calls = sum(job_of(r) in ids for r in server.requests)
    return ThroughputRun(daemons, len(ids), wall_s, per_daemon, events.statuses(ids), calls)


# ------------------------------------------------------------ 5. cost of cluster mode


@dataclass
class CostResult:
    latency_s: float
    repeats: int
    runs_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # daemon CPU over the jobs measured
    idle_cpu: dict[str, float] = field(default_factory=dict)  # CPU s per s with no job
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def median_s(self, mode: str) -> float:
        return median(self.runs_s.get(mode, []))


COST_MODES = ("on", "off")
IDLE_S = 2.0


async def cost(bench: Bench, sizes: Sizes, server: MessagesServer) -> CostResult:
    """One daemon with the changelog on, one with it off (``kafka.changelog_topic = ""``),
    both running; one job at a time, alternating between them, after a warm-up job each."""
    server.latency_s = COST_LATENCY_S
    result = CostResult(COST_LATENCY_S, sizes.cost_repeats)
    clusters = {
        mode: Cluster(
            bench,
            f"cost-{mode}",
            1,
            server.url,
            kafka={**setup_session(), **({} if mode == "on" else {"changelog_topic": ""})},
            jobs={"max_concurrent": 1, "shutdown_grace_s": 5},
        )
        for mode in COST_MODES
    }
    try:
        async with clusters["on"], clusters["off"]:
            await asyncio.gather(*(c.start() for c in clusters.values()))
            async with clusters["on"].events(bench) as on, clusters["off"].events(bench) as off:
                await _cost_runs(clusters, {"on": on, "off": off}, result)
            await asyncio.gather(*(c.stop() for c in clusters.values()))
    except BenchError as exc:
        result.errors.append(str(exc))
        log.info("cost: %s", exc)
    return result


async def _cost_runs(
    clusters: dict[str, Cluster], logs: dict[str, EventLog], result: CostResult
) -> None:
    for mode in COST_MODES:
        await _one_job(clusters[mode], logs[mode])  # a warm-up
    cpu_before = {mode: c.cpu_s() for mode, c in clusters.items()}
    ids: dict[str, set[str]] = {mode: set() for mode in COST_MODES}
    for _ in range(result.repeats):
        for mode in COST_MODES:
            job_id, seconds = await _one_job(clusters[mode], logs[mode])
            result.runs_s.setdefault(mode, []).append(seconds)
            ids[mode].add(job_id)
    for mode, c in clusters.items():
        result.cpu_s[mode] = c.cpu_s() - cpu_before[mode]
        result.statuses[mode] = logs[mode].statuses(ids[mode])
    idle_before = {mode: c.cpu_s() for mode, c in clusters.items()}
    await asyncio.sleep(IDLE_S)
    for mode, c in clusters.items():
        result.idle_cpu[mode] = (c.cpu_s() - idle_before[mode]) / IDLE_S


async def _one_job(cluster: Cluster, events: EventLog) -> tuple[str, float]:
    request = cluster.request(JOB_PHASES)
    job_id = str(request.request_id)
    submitted = await events.submit([request])
    [done] = await events.wait_completed({job_id}, JOB_TIMEOUT_S)
    return job_id, done.at_s - submitted


# ------------------------------------------------------------------------------ main


@dataclass
class Results:
    started: datetime
    quick: bool
    command: str
    sizes: Sizes
    duration_s: float = 0.0
    load: str = ""
    machine: list[tuple[str, str]] = field(default_factory=list)
    failover: FailoverResult | None = None
    restore: RestoreResult | None = None
    bytes: BytesResult | None = None
    throughput: ThroughputResult | None = None
    cost: CostResult | None = None
    durations_s: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations_s[name] = time.monotonic() - started
            log.info("%s: %.0f s", name, self.durations_s[name])


async def run(args: argparse.Namespace, out: Path) -> Results:
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; allowed: {', '.join(SCENARIOS)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    command = " ".join(["python -m bench.failover", *sys.argv[1:]])
    results = Results(datetime.now(UTC), args.quick, command, sizes)
    results.load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    server = model_server()
    try:
        async with Bench(keep=args.keep) as bench:
            log.info("broker %s, scratch folder %s", bench.bootstrap, bench.root)
            results.machine = report.machine(bench.root)
            # the demo job runs while the failover cluster waits for its group's first
            # join (a count of bytes, not a time; nothing of the failover is measured then)
            demo = asyncio.create_task(demo_bytes(bench, server)) if "bytes" in only else None
            if "failover" in only:
                with results.timed("failover"):
                    results.failover = await failover(bench, sizes, server, demo)
            if demo is not None:
                results.bytes = await demo
            if "restore" in only:
                with results.timed("restore"):
                    results.restore = await restore_sizes(bench, sizes, server)
            if "throughput" in only:
                with results.timed("throughput"):
                    results.throughput = await throughput(bench, sizes, server)
            if "cost" in only:
                with results.timed("cost"):
                    results.cost = await cost(bench, sizes, server)
    finally:
        server.stop()
    results.duration_s = time.monotonic() - started
    (out / "FAILOVER.md").write_text(failover_report.render(results), encoding="utf-8")
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer kills and sizes (about 90 s)")
    parser.add_argument("--out", type=Path, help="folder for FAILOVER.md")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("daemon").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    out = args.out or (ROOT / "bench" / ".runs" / "quick" if args.quick else ROOT / "bench")
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, out))
    print()
    for line in failover_report.summary_lines(results):
        print(line)
    print(f"\nwritten: {out / 'FAILOVER.md'} ({results.duration_s:.0f} s)")


if __name__ == "__main__":
    main()
