"""Several ``codegend run`` daemons in one consumer group on the benchmark's broker, each with
its own store, output folder, ready file and JSON log; what those logs say about the group's
assignments and the restores; keyed requests spread over the partitions; and a changelog
partition read back raw.

Every process here is one the benchmark started; it is signalled by its own pid only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench.harness import Bench, Config, EventLog, environment, merge
from bench.procs import BenchError, DaemonProcess, log_tail
from daemon.contract import GenerationRequest
from daemon.settings import Settings, load_settings

BALANCE_TIMEOUT_S = 90.0
POLL_S = 0.05
# intake's rebalance listener: "consuming t:0, t:2 (kept [0], restoring [2], lost [])" in
# cluster mode, "consuming t:0, t:2" without it
ASSIGNED = re.compile(
    r"^consuming ?(?P<parts>[^(]*?)"
    r"(?: \(kept \[(?P<kept>[^\]]*)\], restoring \[(?P<new>[^\]]*)\], lost \[[^\]]*\]\))?$"
)
# daemon.ownership, once a partition is restored
RESTORED = re.compile(
    r"^partition (?P<partition>\d+): restored (?P<jobs>\d+) jobs in (?P<seconds>[\d.]+) s "
    r"\(fence (?P<fence>\d+)"
)


@dataclass(frozen=True)
class LogLine:
    at: float  # time.time() of the record (the JSON log's ts, to the millisecond)
    message: str


@dataclass(frozen=True)
class Assignment:
    at: float
    partitions: frozenset[int]
    restoring: frozenset[int]


@dataclass(frozen=True)
class Restore:
    at: float  # when the restore ended
    partition: int
    jobs: int
    seconds: float  # as the daemon measured it: membership proof, read, claim, import


def _numbers(text: str | None) -> frozenset[int]:
    return frozenset(int(n) for n in (text or "").split(",") if n.strip())


def read_log(path: Path, offset: int = 0) -> list[LogLine]:
    """The JSON records of a daemon's log from byte ``offset`` (other lines left out)."""
    if not path.exists():
        return []
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    lines = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
            stamp = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        except (ValueError, KeyError, TypeError):
            continue
        lines.append(LogLine(stamp.replace(tzinfo=UTC).timestamp(), str(record["message"])))
    return lines


@dataclass
class Member:
    """One daemon of a cluster: its configuration, files and current process."""

    index: int
    home: Path
    config: Config
    process: DaemonProcess
    mark: int = 0  # the log's size when the current process was spawned

    @property
    def alive(self) -> bool:
        return self.process.alive

    def log_size(self) -> int:
        path = self.process.log_path
        return path.stat().st_size if path.exists() else 0

    def log(self, since: int | None = None) -> list[LogLine]:
        return read_log(self.process.log_path, self.mark if since is None else since)

    def assignments(self, since: int | None = None) -> list[Assignment]:
        found = []
        for line in self.log(since):
            if matched := ASSIGNED.match(line.message):
                names = [n.strip() for n in matched["parts"].split(",") if n.strip()]
                partitions = frozenset(int(n.rsplit(":", 1)[1]) for n in names)
                found.append(Assignment(line.at, partitions, _numbers(matched["new"])))
        return found

    def restores(self, since: int | None = None) -> list[Restore]:
        found = []
        for line in self.log(since):
            if matched := RESTORED.match(line.message):
                found.append(
                    Restore(
                        line.at,
                        int(matched["partition"]),
                        int(matched["jobs"]),
                        float(matched["seconds"]),
                    )
                )
        return found

    def assigned(self) -> frozenset[int] | None:
        found = self.assignments()
        return found[-1].partitions if found else None


class Cluster:
    """``size`` daemons on one set of topics and one group (cluster mode unless the
    sections set ``kafka.changelog_topic = ""``), talking to the model at ``model_url``."""

    def __init__(
        self, bench: Bench, name: str, size: int, model_url: str, **sections: dict[str, Any]
    ) -> None:
        setup = bench.setup(name, **sections)
        prefix = f"bench-{bench.run_id}-{name}"
        cluster_topics = {
            "changelog_topic": f"{prefix}-changelog",
            "commands_topic": f"{prefix}-commands",
        }
        kafka = {**cluster_topics, **sections.get("kafka", {})}
        self.config = merge(setup.config, {"kafka": kafka})
        self.name = name
        self.workdir = setup.workdir
        self.members: list[Member] = []
        for index in range(size):
            home = setup.workdir / f"d{index}"
            home.mkdir()
            config = merge(self.config, {"store": {"path": home / "codegend.db"}})
            config = merge(config, {"output": {"dir": home / "out"}})
            env = environment(config, model_url, {"CODEGEND_LOG_FORMAT": "json"})
            self.members.append(
                Member(index, home, config, DaemonProcess(env, home / "daemon.log"))
            )
        self.settings: Settings = load_settings(**self.config)
        self.partitions = self.settings.kafka.topic_partitions
        self._names = 0

    # -- daemons

    def spawn(self, index: int) -> None:
        member = self.members[index]
        if member.alive:
            raise BenchError(f"daemon {index} of {self.name} runs already")
        member.mark = member.log_size()
        member.process.spawn()

    async def start(self, indices: list[int] | None = None) -> None:
        """Start the daemons (all by default) at once; return once each is ready and the
        group's assignment gives every live daemon its share of the partitions."""
        chosen = list(range(len(self.members))) if indices is None else indices
        for index in chosen:
            self.spawn(index)
        for index in chosen:
            await self.members[index].process.wait_ready()
        await self.wait_balanced()

    def live(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    async def wait_balanced(
        self, timeout_s: float = BALANCE_TIMEOUT_S
    ) -> dict[int, frozenset[int]]:
        """Until every live daemon's latest assignment is not empty and together they hold
        each partition once; their partitions, by daemon."""
        deadline = time.monotonic() + timeout_s
        while True:
            latest = {m.index: m.assigned() for m in self.live()}
            held = sorted(p for found in latest.values() for p in found or ())
            if latest and all(latest.values()) and held == list(range(self.partitions)):
                return {i: found or frozenset() for i, found in latest.items()}
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name}: the group did not settle in {timeout_s:.0f} s: {latest}\n"
                    + self.logs()
                )
            await asyncio.sleep(POLL_S)

    async def kill(self, index: int) -> float:
        """SIGKILL daemon ``index`` by its pid; the time.time() just before the signal."""
        member = self.members[index]
        if not member.alive:
            raise BenchError(f"daemon {index} of {self.name} had exited\n{self.logs()}")
        killed_at = time.time()
        await member.process.kill()
        return killed_at

    async def stop(self) -> None:
        """SIGTERM every live daemon at once (SIGKILL after the stop timeout)."""
        await asyncio.gather(*(m.process.stop() for m in self.live()))

    def events(self, bench: Bench) -> EventLog:
        """A follower of the cluster's events topic (open it once a daemon created the
        topic: a consumer of a missing topic has the broker create it, with its default
        partition count)."""
        return EventLog(self.settings, bench.bootstrap)

    def cpu_s(self) -> float:
        return sum(m.process.cpu_s() for m in self.live())

    def logs(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- daemon {m.index} ({m.process.log_path}):\n{log_tail(m.process.log_path, lines)}"
            for m in self.members
        )

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill_leftovers()

    async def kill_leftovers(self) -> None:
        """SIGKILL, by pid, each of its daemons still running."""
        for member in self.members:
            if member.alive:
                await member.process.kill()

    # -- requests

    def requests(
        self, per_partition: int, phases: tuple[str, ...] | None = None
    ) -> list[GenerationRequest]:
        """``per_partition`` requests for each partition: request ids (the message keys)
        chosen so that the producer's partitioner (murmur2) puts them there. The project
        name is the request id, so a model call names its job (``Project: <name>``)."""
        every = list(range(self.partitions))
        partitioner = DefaultPartitioner()
        wanted = {p: per_partition for p in every}
        found: list[GenerationRequest] = []
        while any(wanted.values()):
            self._names += 1
            request_id = f"{self.name}-{self._names:04d}"
            partition = partitioner(request_id.encode(), every, every)
            if wanted[partition]:
                wanted[partition] -= 1
                found.append(request(request_id, phases))
        return found

    def request(self, phases: tuple[str, ...] | None = None) -> GenerationRequest:
        """One request, on whichever partition its id lands."""
        self._names += 1
        return request(f"{self.name}-{self._names:04d}", phases)

    def partition_of(self, request_id: str) -> int:
        every = list(range(self.partitions))
        return int(DefaultPartitioner()(request_id.encode(), every, every))


def request(request_id: str, phases: tuple[str, ...] | None = None) -> GenerationRequest:
    body: dict[str, Any] = {
        "request_id": request_id,
        "project_name": request_id,
        "mockup": {"kind": "text", "description": f"A dashboard for {request_id}"},
    }
    if phases is not None:
        body["options"] = {"phases": list(phases)}
    return GenerationRequest.model_validate(body)


def metrics_url(member: Member) -> str:
    """The base URL of the member's /metrics and /healthz, from its ready file."""
    return str(json.loads(member.process.ready_file.read_text())["metrics"])


async def longest_answer(url: str, stop: asyncio.Event, every_s: float = 0.02) -> float:
    """Ask ``url`` + ``/healthz`` again and again until ``stop`` is set; the longest one
    took to answer. The daemon answers it on its event loop: the figure is how long the
    loop was busy with something else at a stretch (heartbeats wait as long)."""
    host, port = url.removeprefix("http://").split(":")
    longest = 0.0
    while not stop.is_set():
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        longest = max(longest, time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return longest


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        """Key and value bytes (what the log holds of it, headers and framing aside)."""
        return len(self.key or b"") + len(self.value or b"")

    @property
    def name(self) -> str:
        return (self.key or b"").decode(errors="replace")


async def read_partition(bootstrap: str, topic: str, partition: int) -> list[Record]:
    """Every record of one partition now, from its beginning, with a plain consumer."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[Record] = []
        async with asyncio.timeout(60):
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
                found += [Record(r.offset, r.key, r.value) for r in batch.get(tp, [])]
        return found
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
