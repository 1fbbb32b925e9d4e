"""The owner's side of remote operations (docs/cluster-design.md section 5.1): for every
partition this daemon owns, read the partition of the commands topic from the partition's
commands offset, apply each command through the store, and answer on the same partition.

A command's effect and the partition's new commands offset are written in one store
transaction, and the offset's ``~commands`` record is marked after the effect's keys: the
changelog gets them together, so a partition's next owner, which restores the offset with
the partition, neither loses an applied command nor applies one twice. The reply goes out
once that transaction is committed. Replies (``reply/`` keys) and records that are not
commands are passed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon.command_records import (
    CANCEL,
    RESUME,
    BadCommand,
    Command,
    Reply,
    is_reply,
    parse_command,
)
from daemon.errors import IllegalMove, JobNotFound, StoreFull
from daemon.kafka import client_options
from daemon.settings import KafkaSettings
from daemon.states import JobState
from daemon.store import Store

log = logging.getLogger(__name__)
FETCH_TIMEOUT_MS = 500
IDLE_S = 0.5  # with no partition owned: how often the owned partitions are looked at again
RETRY_S = (1.0, 30.0)
RESUMABLE = (JobState.FAILED, JobState.PARTIAL, JobState.CANCELLED)  # as `resume --all` locally


class Owned(Protocol):
    """The partitions this daemon may apply commands for (daemon.ownership.Ownership)."""

    def ready_partitions(self) -> Collection[int]: ...

    def ready(self, partition: int) -> bool: ...


class CommandRelay:
    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap_servers: str,
        store: Store,
        producer: AIOKafkaProducer,
        owned: Owned,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap_servers
        self._topic = kafka.commands_topic
        self._store = store
        self._producer = producer
        self._owned = owned
        self._on_commit = on_commit  # a command changed jobs: wake the scheduler and the relay
        self._assigned: set[int] = set()
        self._positions: dict[int, int] = {}  # the next offset to read, per partition assigned
        self._reseek: set[int] = set()  # read again from the store's offset at the next pass
        self._wake = asyncio.Event()
        self.applied = 0  # commands applied (a figure for tests)

    def partition_ready(self, partition: int) -> None:
        """The partition was restored: its commands are read from the offset restored."""
        self._reseek.add(partition)
        self._wake.set()

    async def run(self) -> None:
        consumer = self._consumer()
        backoff = RETRY_S[0]
        try:
            await self._start(consumer)
            while True:
                try:
                    await self._pass(consumer)
                except (KafkaError, StoreFull, OSError) as exc:
                    log.warning("commands: %r; reading again in %.0f s", exc, backoff)
                    self._reseek |= self._assigned  # whatever was read and not applied
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_S[1])
                    continue
                backoff = RETRY_S[0]
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            **client_options(self._kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # an offset the topic's retention removed: its start
            fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
        )

    async def _start(self, consumer: AIOKafkaConsumer) -> None:
        backoff = RETRY_S[0]
        while True:
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                log.warning(
                    "commands: cannot read %s (%r); again in %.0f s", self._topic, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_S[1])

    async def _pass(self, consumer: AIOKafkaConsumer) -> None:
        """One fetch of the commands of the partitions ready, each applied and answered."""
        wanted = set(self._owned.ready_partitions())
        if wanted != self._assigned or self._reseek & wanted:
            self._assign(consumer, wanted)
        if not self._assigned:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_S)
            return
        tps = [TopicPartition(self._topic, p) for p in sorted(self._assigned)]
        batches = await consumer.getmany(*tps, timeout_ms=FETCH_TIMEOUT_MS)
        for tp, records in batches.items():
            partition = tp.partition
            for record in records:
                if partition in self._reseek or not self._owned.ready(partition):
                    # Suspended or lost meanwhile: what is left is read again once it is ready.
                    self._reseek.add(partition)
                    break
                if record.offset >= self._positions.get(partition, 0):
                    await self._handle(partition, record.offset, record.key, record.value)
                self._positions[partition] = record.offset + 1

    def _assign(self, consumer: AIOKafkaConsumer, wanted: set[int]) -> None:
        for partition in set(self._positions) - wanted:
            del self._positions[partition]
        for partition in wanted:
            if partition in self._reseek or partition not in self._positions:
                self._positions[partition] = self._store.commands_offset(partition)
        self._reseek -= wanted
        self._assigned = wanted
        if not wanted:
            consumer.unsubscribe()
            return
        consumer.assign([TopicPartition(self._topic, p) for p in sorted(wanted)])
        for partition in wanted:
            consumer.seek(TopicPartition(self._topic, partition), self._positions[partition])

    async def _handle(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        if is_reply(key):
            return
        reply = self.apply(partition, offset, value)
        if reply is None:
            return
        try:
            await self._producer.send_and_wait(
                self._topic, reply.to_bytes(), key=reply.key, partition=partition
            )
        except KafkaError as exc:  # applied all the same; the sender hears nothing
            log.warning("commands: the reply to %s was not sent (%r)", reply.command_id, exc)

    def apply(self, partition: int, offset: int, value: bytes | None) -> Reply | None:
        """Apply the command at ``offset`` of the partition and move the partition's
        commands offset past it, in one transaction; the reply to send (None: the record
        was no command, and names no sender)."""
        try:
            command = parse_command(value)
        except BadCommand as exc:
            log.warning("commands: partition %d offset %d: not applied: %s", partition, offset, exc)
            self._store.advance_commands(partition, offset + 1)
            return None if exc.command_id is None else Reply(exc.command_id, False, str(exc))
        with self._store.transaction():
            ok, message = self._effect(partition, command)
            self._store.advance_commands(partition, offset + 1)
        self.applied += 1
        log.info(
            "%s (remote %s, command %s)",
            message,
            command.type,
            command.command_id,
            extra={"job_id": command.job_id} if command.job_id else {},
        )
        if ok:
            self._on_commit()
        return Reply(command.command_id, ok, message)

    def _effect(self, partition: int, command: Command) -> tuple[bool, str]:
        """Apply the command (inside the caller's transaction); whether it was applied, and
        what to say."""
        store = self._store
        if command.job_id is None:  # resume_all
            return True, self._resume_all(partition, command.reason)
        job_id = command.job_id
        try:
            if store.partition_of_job(job_id) != partition:
                raise JobNotFound(f"no job {job_id!r}")  # or a stale copy of another's partition
            if command.type == CANCEL:
                return True, self._cancel(job_id)
            if command.type == RESUME:
                return True, _resumed(job_id, store.reopen(job_id, reason=command.reason))
        except (JobNotFound, IllegalMove) as exc:
            return False, str(exc)
        return False, f"unknown command type {command.type!r}"

    def _cancel(self, job_id: str) -> str:
        state = self._store.job(job_id).state
        if state.is_terminal:
            return f"{job_id}: already {state.name}, nothing to cancel"
        self._store.request_cancel(job_id)
        return f"{job_id}: cancel requested"

    def _resume_all(self, partition: int, reason: str) -> str:
        store = self._store
        ours = set(store.partition_jobs(partition))
        done = []
        for row in store.jobs(RESUMABLE):
            if row["job_id"] not in ours:
                continue
            try:
                done.append(_resumed(row["job_id"], store.reopen(row["job_id"], reason=reason)))
            except IllegalMove as exc:
                done.append(str(exc))
        if not done:
            return f"partition {partition}: no failed, partial or cancelled job"
        return f"partition {partition}: " + "; ".join(done)


def _resumed(job_id: str, phase: str | None) -> str:
    return f"{job_id}: resumes at {phase}" if phase else f"{job_id}: nothing left to run"
