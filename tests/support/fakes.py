"""In-memory stand-ins for what the orchestration core talks to, so that intake, the outbox
relay, the job runner and the scheduler run in-process without a broker or a model:

- ``FakeConsumer``: the part of ``AIOKafkaConsumer`` intake uses (subscribe, getmany, seek,
  pause, resume, paused, assignment, commit), over in-memory partitions, with rebalances;
- ``FakeProducer``: ``send`` and ``send_and_wait`` of ``AIOKafkaProducer``, acknowledging in
  send order as Kafka does per partition, refusing and failing when told to;
- ``ScriptedPhases``: the part of ``PhaseRunner`` the job runner uses (run, verify,
  check_project), answering each phase from a script.

Each misbehaves as the real thing does where the code must cope: aiokafka raises
``IllegalStateError`` for a seek or a commit on a partition not assigned, forgets every
pause at a rebalance (the assignment is new), and starts a newly assigned partition at its
committed offset; the producer raises ``MessageSizeTooLargeError`` from ``send`` for a
record over its ``max_request_size``, and the broker fails the delivery of one over its
``max.message.bytes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, MessageSizeTooLargeError

from daemon.checks import Problem
from daemon.contract import Event, FileRecord, Usage, parse_event
from daemon.generation import PhaseHooks
from daemon.records import JobRecord, NewFile, PhaseOutcome
from daemon.states import Phase

REQUESTS_TOPIC = "codegen.requests"
EMPTY_POLL_S = 0.001  # the real getmany waits up to timeout_ms for records; a test need not


@dataclass
class Record:
    """What intake reads of an aiokafka ConsumerRecord."""

    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str = REQUESTS_TOPIC
    partition: int = 0


class FakeConsumer:
    """Partitions of records (``logs``, offsets rising); hands out each assigned, unpaused
    partition's records from its position on. ``calls`` holds every pause, resume, seek and commit, in order;
    ``polls`` counts the calls of getmany, ``fetches`` those that handed out records."""

    def __init__(self, *partitions: TopicPartition) -> None:
        self.logs: dict[TopicPartition, list[Record]] = {tp: [] for tp in partitions}
        self.position: dict[TopicPartition, int] = dict.fromkeys(partitions, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.calls: list[tuple[str, Any]] = []
        self.commit_errors: list[BaseException] = []  # raised by the next commits, in turn
        self.polls = 0
        self.fetches = 0
        self.topics: list[str] = []
        self._assigned = set(partitions)
        self._paused: set[TopicPartition] = set()
        self._listener: ConsumerRebalanceListener | None = None

    def add(self, tp: TopicPartition, *values: bytes | None) -> list[Record]:
        """Append records holding ``values`` to the partition; returns them."""
        log = self.logs.setdefault(tp, [])
        first = log[-1].offset + 1 if log else 0
        records = [
            Record(first + i, value, topic=tp.topic, partition=tp.partition)
            for i, value in enumerate(values)
        ]
        log.extend(records)
        return records

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.topics, self._listener = list(topics), listener

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        batches = {}
        for tp in sorted(self._assigned - self._paused):
            position = self.position.get(tp, 0)
            batch = [r for r in self.logs.get(tp, []) if r.offset >= position]
            batch = batch[: max_records or len(batch)]
            if batch:
                batches[tp] = batch
                self.position[tp] = batch[-1].offset + 1
        self.fetches += bool(batches)
        await asyncio.sleep(0 if batches else EMPTY_POLL_S)
        return batches

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_assigned([tp])
        self.calls.append(("seek", (tp, offset)))
        self.position[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self._check_assigned(tps)
        self.calls.append(("pause", set(tps)))
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._check_assigned(tps)
        self.calls.append(("resume", set(tps)))
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        self._check_assigned(offsets)
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.calls.append(("commit", dict(offsets)))
        self.committed.update(offsets)

    def commits(self) -> list[dict[TopicPartition, int]]:
        return [offsets for name, offsets in self.calls if name == "commit"]

    async def rebalance(self, assigned: Iterable[TopicPartition]) -> None:
        """A rebalance as aiokafka runs it: every partition revoked (the listener first),
        then the new assignment, unpaused, each partition from its committed offset."""
        revoked = set(self._assigned)
        if self._listener is not None:
            await self._listener.on_partitions_revoked(revoked)
        self._assigned, self._paused = set(assigned), set()
        for tp in self._assigned:
            self.position[tp] = self.committed.get(tp, 0)
        if self._listener is not None:
            await self._listener.on_partitions_assigned(set(self._assigned))

    def _check_assigned(self, tps: Iterable[TopicPartition]) -> None:
        missing = set(tps) - self._assigned
        if missing:
            raise IllegalStateError(f"Partitions {missing} are not assigned")


@dataclass
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None = None  # given explicitly; None: the partitioner's choice

    @property
    def size(self) -> int:
        """About what Kafka counts of a record: its value, key and headers."""
        headers = sum(len(name) + len(value) for name, value in self.headers)
        return len(self.value or b"") + len(self.key or b"") + headers


@dataclass
class FakeProducer:
    """Sends are acknowledged (or failed) in the order they were made, on the loop's next
    turn. ``max_request_bytes``: the producer's own cap, refused by ``send`` itself;
    ``broker_max_bytes``: the broker's, failing the delivery. ``send_errors`` and
    ``ack_errors`` fail the next sends (raised by ``send``) or deliveries, in turn (None
    lets one through); ``down``, while set, is raised by every send; ``before_send`` is
    awaited at the start of every send (a rebalance, say)."""

    max_request_bytes: int | None = None
    broker_max_bytes: int | None = None
    send_errors: list[BaseException | None] = field(default_factory=list)
    ack_errors: list[BaseException | None] = field(default_factory=list)
    down: BaseException | None = None
    before_send: Callable[[Sent], Awaitable[None]] | None = None
    sent: list[Sent] = field(default_factory=list)  # acknowledged, in order
    handed: list[Sent] = field(default_factory=list)  # every record send accepted
    refused: list[Sent] = field(default_factory=list)  # failed by the broker as too large

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        record = Sent(topic, value, key, list(headers or []), partition)
        if self.before_send is not None:
            await self.before_send(record)
        if self.down is not None:
            raise self.down
        if self.send_errors and (error := self.send_errors.pop(0)) is not None:
            raise error
        if self.max_request_bytes is not None and record.size > self.max_request_bytes:
            raise MessageSizeTooLargeError(f"{record.size} bytes is over max_request_size")
        self.handed.append(record)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        loop.call_soon(self._settle, future, record)
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        await (await self.send(topic, value, key=key, headers=headers, partition=partition))

    def _settle(self, future: asyncio.Future[None], record: Sent) -> None:
        if self.ack_errors and (error := self.ack_errors.pop(0)) is not None:
            future.set_exception(error)
        elif self.broker_max_bytes is not None and record.size > self.broker_max_bytes:
            self.refused.append(record)
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append(record)
            future.set_result(None)

    def events(self, topic: str | None = None) -> list[Event]:
        """What was acknowledged (to ``topic`` if given), read as events."""
        return [parse_event(r.value or b"") for r in self.sent if topic in (None, r.topic)]


Step = PhaseOutcome | BaseException | Usage


class ScriptedPhases:
    """Runs each phase from ``script[name]``, one item per attempt: an exception is raised,
    a PhaseOutcome returned, a Usage makes the default outcome with that usage; once the
    script is out, the default: one file in the phase's area. ``gate(name)`` makes the
    phase's attempts wait for the event it returns. ``started`` lists the attempts in
    order; ``most_at_once`` is how many ran at once at most."""

    def __init__(self, script: dict[str, Sequence[Step]] | None = None) -> None:
        self.script = {name: list(steps) for name, steps in (script or {}).items()}
        self.started: list[str] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self.project_checks: list[dict[str, str]] = []
        self.problems: list[Problem] = []  # what check_project finds
        self.hooks: dict[str, PhaseHooks] = {}
        self._gates: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    async def until_started(self, *names: str) -> None:
        while not set(names) <= set(self.started):
            await asyncio.sleep(0.001)

    async def run(
        self,
        job: JobRecord,
        phase: Phase,
        manifest: Sequence[FileRecord],
        committed: Sequence[FileRecord] = (),
        hooks: PhaseHooks | None = None,
    ) -> PhaseOutcome:
        return await self._attempt(phase, hooks)

    async def verify(
        self,
        job: JobRecord,
        phase: Phase,
        files: dict[str, str],
        writers: dict[str, str],
        committed: Sequence[FileRecord],
        hooks: PhaseHooks,
    ) -> PhaseOutcome:
        return await self._attempt(phase, hooks)

    async def check_project(self, files: dict[str, str]) -> list[Problem]:
        self.project_checks.append(dict(files))
        return list(self.problems)

    async def _attempt(self, phase: Phase, hooks: PhaseHooks | None) -> PhaseOutcome:
        self.started.append(phase.name)
        self.hooks[phase.name] = hooks or PhaseHooks()
        self.running.add(phase.name)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await asyncio.sleep(0)  # as a model call would: the phases beside it start too
            if phase.name in self._gates:
                await self._gates[phase.name].wait()
            steps = self.script.get(phase.name) or []
            step = steps.pop(0) if steps else Usage(input_tokens=10, output_tokens=5, calls=1)
        finally:
            self.running.discard(phase.name)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, PhaseOutcome):
            return step
        path = f"{phase.area}{phase.name.lower()}.txt"
        return PhaseOutcome(phase.name, phase.step, [NewFile(path, phase.name)], usage=step)
