"""Remote operations from any process that reaches the brokers (docs/cluster-design.md
sections 5.1 to 5.3): the cluster's replicated state read from the changelog into a
throwaway store, and commands sent to the owner of a job's partition, with its reply.

``read_state`` is the restore's read without a claim: each changelog partition is read to
its end offset by a consumer of no group, through the reading rules of daemon.claims, and
the valid values are imported into a store in a private temporary folder, deleted at exit.
``status`` and ``export`` run their usual code against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon import changelog
from daemon.claims import PartitionLog
from daemon.command_records import Command, Reply, parse_reply, reply_key
from daemon.errors import BrokerError, CodegendError, JobNotFound
from daemon.kafka import make_changelog_reader, make_producer
from daemon.settings import KafkaSettings, Settings
from daemon.store import Store

FETCH_TIMEOUT_MS = 500
MAX_RECORDS = 5000
COMMAND_WAIT_S = 30.0  # how long the CLI waits for the owner's reply


@dataclass
class RemoteState:
    """The replicated state of the partitions read: a store holding it, and each
    partition's log as read (its claim, its valid values, its commands offset)."""

    store: Store
    logs: dict[int, PartitionLog]

    def partition_of(self, job_id: str) -> int | None:
        """The changelog partition that holds the job's state record (one at most)."""
        return next((p for p, log in sorted(self.logs.items()) if job_id in log.values), None)


def derived_partition(kafka: KafkaSettings, job_id: str) -> int | None:
    """The requests partition of a job id of the derived form ``topic:partition:offset``
    (a request without a request_id); None for any other id."""
    topic, partition, offset = (["", "", ""] + job_id.rsplit(":", 2))[-3:]
    if topic == kafka.requests_topic and partition.isdigit() and offset.isdigit():
        return int(partition)
    return None


@contextlib.contextmanager
def read_state(
    settings: Settings, partitions: Collection[int] | None = None
) -> Iterator[RemoteState]:
    """The valid state of the changelog's ``partitions`` (all if None), read to their end
    offsets, in a store of its own that is deleted at exit."""
    logs = asyncio.run(read_logs(settings.kafka, partitions))
    # mkdtemp makes the folder 0700: the store holds requests and generated files
    with tempfile.TemporaryDirectory(prefix="codegend-view-") as folder:
        store = Store(Path(folder) / "view.db")
        try:
            for log in logs.values():
                changelog.apply_all(store, log.values.items())
            yield RemoteState(store, logs)
        finally:
            store.close()


async def read_logs(
    kafka: KafkaSettings, partitions: Collection[int] | None = None
) -> dict[int, PartitionLog]:
    """Each changelog partition asked for (all if None), read from its beginning to the
    end offset it had when the read began; a partition the topic lacks is left out."""
    topic = kafka.changelog_topic
    consumer = _consumer(kafka)
    await _started(consumer, kafka)
    try:
        every = await _partitions(consumer, topic, kafka)
        tps = [
            TopicPartition(topic, p)
            for p in sorted(every if partitions is None else set(partitions) & every)
        ]
        logs = {tp.partition: PartitionLog() for tp in tps}
        if not tps:
            return logs
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        try:
            async with asyncio.timeout(kafka.restore_timeout_s):
                pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
                while pending:
                    batches = await consumer.getmany(
                        *pending, timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS
                    )
                    for tp, records in batches.items():
                        for r in records:
                            if r.offset < ends[tp]:
                                logs[tp.partition].feed(r.offset, r.key, r.value, r.headers)
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        except TimeoutError:
            raise CodegendError(
                f"reading {topic} took longer than kafka.restore_timeout_s "
                f"({kafka.restore_timeout_s:g} s)"
            ) from None
        except KafkaError as exc:
            raise BrokerError(f"reading {topic} failed: {exc!r}") from None
        return logs
    finally:
        await consumer.stop()


def job_partition(settings: Settings, job_id: str) -> int:
    """The requests partition of a job: from its id when it is a derived one, else from
    the replicated state (every partition is read). JobNotFound when no partition has it."""
    derived = derived_partition(settings.kafka, job_id)
    if derived is not None:
        return derived
    with read_state(settings) as state:
        # a pruned job's state record is its marker: no job either
        found = state.store.partition_of_job(job_id) is not None
        partition = state.partition_of(job_id)
    if partition is None or not found:
        raise JobNotFound(f"no job {job_id!r}")
    return partition


async def command_partitions(kafka: KafkaSettings) -> list[int]:
    """The partitions of the commands topic."""
    consumer = _consumer(kafka)
    await _started(consumer, kafka)
    try:
        return sorted(await _partitions(consumer, kafka.commands_topic, kafka))
    finally:
        await consumer.stop()


async def send_commands(
    kafka: KafkaSettings, commands: Mapping[int, Command], wait_s: float = COMMAND_WAIT_S
) -> dict[int, Reply | None]:
    """Send each command to its partition of the commands topic and wait, up to ``wait_s``
    in all, for the replies (read from each command's offset on); None where none came."""
    topic = kafka.commands_topic
    consumer = _consumer(kafka)
    await _started(consumer, kafka)
    producer = make_producer(kafka, kafka.bootstrap_servers)
    try:
        every = await _partitions(consumer, topic, kafka)
        if missing := sorted(set(commands) - every):
            raise CodegendError(f"{topic} has no partition {', '.join(map(str, missing))}")
        await _started(producer, kafka)
        offsets: dict[int, int] = {}
        try:
            for partition, command in commands.items():
                metadata = await producer.send_and_wait(
                    topic, command.to_bytes(), key=command.key, partition=partition
                )
                offsets[partition] = metadata.offset
        except KafkaError as exc:
            raise BrokerError(f"cannot send to {topic}: {exc!r}") from None
        return await _replies(consumer, topic, commands, offsets, wait_s)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        await consumer.stop()


async def _replies(
    consumer: AIOKafkaConsumer,
    topic: str,
    commands: Mapping[int, Command],
    offsets: Mapping[int, int],
    wait_s: float,
) -> dict[int, Reply | None]:
    replies: dict[int, Reply | None] = dict.fromkeys(commands)
    wanted = {p: reply_key(commands[p].command_id) for p in offsets}
    tps = {p: TopicPartition(topic, p) for p in offsets}
    consumer.assign(list(tps.values()))
    for partition, tp in tps.items():
        consumer.seek(tp, offsets[partition])
    deadline = time.monotonic() + wait_s
    while (waiting := [tps[p] for p in tps if replies[p] is None]) and (
        left := deadline - time.monotonic()
    ) > 0:
        try:
            batches = await consumer.getmany(
                *waiting, timeout_ms=int(min(FETCH_TIMEOUT_MS, left * 1000)) + 1
            )
        except KafkaError:
            await asyncio.sleep(min(0.5, max(left, 0)))
            continue
        for tp, records in batches.items():
            for record in records:
                if record.key == wanted[tp.partition]:
                    replies[tp.partition] = parse_reply(record.value)
    return replies


def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return make_changelog_reader(kafka, kafka.bootstrap_servers, kafka.fetch_max_wait_ms)


async def _started(client: AIOKafkaConsumer | AIOKafkaProducer, kafka: KafkaSettings) -> None:
    try:
        await client.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the brokers at {kafka.bootstrap_servers}: {exc}") from None


async def _partitions(consumer: AIOKafkaConsumer, topic: str, kafka: KafkaSettings) -> set[int]:
    try:
        await consumer.topics()  # fresh metadata
    except KafkaError as exc:
        raise BrokerError(f"cannot read the topics of {kafka.bootstrap_servers}: {exc}") from None
    found = consumer.partitions_for_topic(topic)
    if not found:
        raise CodegendError(
            f"no topic {topic} on {kafka.bootstrap_servers}: no daemon in cluster mode has "
            "run with these settings (kafka.changelog_topic, kafka.commands_topic)"
        )
    return set(found)
