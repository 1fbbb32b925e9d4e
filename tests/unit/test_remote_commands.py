"""Remote operations (docs/cluster-design.md section 5): the records of the commands topic,
the owner applying a command and advancing its partition's commands offset in one store
transaction, the ``~commands`` record from that offset to the changelog and back into a
restored store, and the relay reading each owned partition from that offset."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition

from daemon import changelog
from daemon.changelog_writer import ChangelogWriter
from daemon.claims import PartitionLog, fence_header
from daemon.command_records import (
    CANCEL,
    RESUME,
    RESUME_ALL,
    BadCommand,
    Reply,
    is_reply,
    new_command,
    parse_command,
    parse_reply,
    reply_key,
)
from daemon.command_relay import CommandRelay
from daemon.commands.store import _raise_unanswered
from daemon.contract import parse_event
from daemon.errors import CodegendError, StoreFull
from daemon.remote import RemoteState, derived_partition
from daemon.settings import KafkaSettings
from daemon.states import JobState
from daemon.store import Store
from daemon.store.partitions import OWNED
from tests.support.fakes import FakeProducer
from tests.support.store_records import sample_request

COMMANDS = "codegen.commands"
CHANGELOG = "codegen.changelog"
PARTITION = 2
KAFKA = KafkaSettings(
    bootstrap_servers="broker:9092", changelog_topic=CHANGELOG, commands_topic=COMMANDS
)


def job(store: Store, job_id: str, partition: int = PARTITION) -> None:
    """A pending job read from requests partition ``partition``."""
    store.create_job(job_id, sample_request(job_id), f"codegen.requests:{partition}:0", ["ARCH"])


def cancelled(store: Store, job_id: str, partition: int = PARTITION) -> None:
    job(store, job_id, partition)
    store.move(store.job(job_id), JobState.CANCELLED, trigger="cancel")


def marks(store: Store) -> list[tuple[str, int]]:
    return [(mark.key, mark.partition) for mark in store.marks()]


@dataclass
class Owned:
    partitions: set[int] = field(default_factory=lambda: {PARTITION})

    def ready_partitions(self) -> set[int]:
        return set(self.partitions)

    def ready(self, partition: int) -> bool:
        return partition in self.partitions


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "owner.db", changelog=True)
    opened.set_partition(PARTITION, OWNED, 5, 0)
    yield opened
    opened.close()


def relay(store: Store, producer: FakeProducer | None = None, **kwargs) -> CommandRelay:
    return CommandRelay(KAFKA, "broker:9092", store, producer or FakeProducer(), Owned(), **kwargs)


# -- the records


def test_a_command_survives_its_record():
    command = new_command(CANCEL, "shop-1", "codegend cancel")
    record = json.loads(command.to_bytes())
    assert record == {
        "v": 1,
        "command_id": command.command_id,
        "type": "cancel",
        "job_id": "shop-1",
        "reason": "codegend cancel",
        "sent_at": command.sent_at,
    }
    assert parse_command(command.to_bytes()) == command
    assert command.key == b"shop-1"
    everywhere = new_command(RESUME_ALL, None, "codegend resume")
    assert parse_command(everywhere.to_bytes()) == everywhere and everywhere.key is None


@pytest.mark.parametrize(
    ("value", "error", "command_id"),
    [
        (b"", "not JSON", None),
        (b"[1]", "not a JSON object", None),
        (b'{"v": 1, "type": "cancel", "job_id": "a"}', "no command_id", None),
        (b'{"v": 2, "command_id": "c", "type": "cancel", "job_id": "a"}', "version 2", "c"),
        (b'{"v": 1, "command_id": "c", "type": "delete", "job_id": "a"}', "unknown", "c"),
        (b'{"v": 1, "command_id": "c", "type": "resume"}', "needs a job_id", "c"),
        (b'{"v": 1, "command_id": "c", "type": "resume_all", "job_id": "a"}', "names no", "c"),
    ],
)
def test_a_record_that_is_no_command_says_why_and_to_whom(value, error, command_id):
    with pytest.raises(BadCommand, match=error) as raised:
        parse_command(value)
    assert raised.value.command_id == command_id


def test_a_command_without_a_reason_gets_the_commands_own():
    value = b'{"v": 1, "command_id": "c", "type": "resume", "job_id": "a"}'
    assert parse_command(value).reason == "codegend resume"


def test_replies_say_what_was_done_or_why_not():
    done, refused = Reply("c1", True, "a: cancel requested"), Reply("c2", False, "no job 'b'")
    assert json.loads(done.to_bytes()) == {
        "v": 1,
        "command_id": "c1",
        "ok": True,
        "message": "a: cancel requested",
    }
    assert json.loads(refused.to_bytes())["error"] == "no job 'b'"
    assert [parse_reply(r.to_bytes()) for r in (done, refused)] == [done, refused]
    assert parse_reply(b"{}") is None and parse_reply(None) is None
    assert done.key == reply_key("c1") == b"reply/c1"
    assert is_reply(done.key) and not is_reply(b"shop-1") and not is_reply(None)


def test_a_derived_job_id_names_its_partition():
    assert derived_partition(KAFKA, "codegen.requests:4:17") == 4
    assert derived_partition(KAFKA, "shop-1") is None
    assert derived_partition(KAFKA, "other.topic:4:17") is None  # a request_id with colons
    assert derived_partition(KAFKA, "codegen.requests:x:17") is None


# -- applying a command


def test_a_cancel_and_the_new_offset_are_one_transaction_marked_in_that_order(store):
    job(store, "a")
    for mark in store.marks():
        store.delete_marks([mark])
    reply = relay(store).apply(PARTITION, 41, new_command(CANCEL, "a", "x").to_bytes())
    assert reply is not None and (reply.ok, reply.message) == (True, "a: cancel requested")
    assert store.cancel_requested("a")
    assert store.commands_offset(PARTITION) == 42
    # the offset's mark comes after the effect's: a record that reaches the changelog
    # carries an offset only with the effects before it
    assert marks(store) == [("a", PARTITION), (f"~commands/{PARTITION}", PARTITION)]


def test_an_effect_is_rolled_back_with_an_offset_that_could_not_be_written(store, monkeypatch):
    job(store, "a")

    def full(partition: int, offset: int) -> None:
        raise StoreFull("disk full")

    monkeypatch.setattr(store, "advance_commands", full)
    with pytest.raises(StoreFull):
        relay(store).apply(PARTITION, 0, new_command(CANCEL, "a", "x").to_bytes())
    assert not store.cancel_requested("a")


def test_a_command_for_a_job_the_owner_does_not_have_is_refused_and_passed(store):
    job(store, "elsewhere", partition=1)  # a stale copy of another daemon's partition
    for job_id in ("nobody", "elsewhere"):
        reply = relay(store).apply(PARTITION, 7, new_command(CANCEL, job_id, "x").to_bytes())
        assert reply is not None and (reply.ok, reply.message) == (False, f"no job {job_id!r}")
    assert not store.cancel_requested("elsewhere")
    assert store.commands_offset(PARTITION) == 8


def test_a_resume_reopens_the_job_and_wakes_the_scheduler(store):
    cancelled(store, "a")
    woken = []
    reply = relay(store, on_commit=lambda: woken.append(1)).apply(
        PARTITION, 3, new_command(RESUME, "a", "codegend resume").to_bytes()
    )
    assert reply is not None and reply.message == "a: resumes at ARCH"
    assert woken == [1]
    assert store.job("a").state is JobState.ARCH
    resumed = parse_event(store.unpublished(100)[-1].payload)
    assert (resumed.type, resumed.reason) == ("job.resumed", "codegend resume")


def test_resume_all_reopens_the_partitions_ended_jobs_only(store):
    cancelled(store, "a")
    cancelled(store, "b", partition=1)
    job(store, "c")
    reply = relay(store).apply(PARTITION, 0, new_command(RESUME_ALL, None, "r").to_bytes())
    assert reply is not None and reply.message == f"partition {PARTITION}: a: resumes at ARCH"
    assert store.job("b").state is JobState.CANCELLED
    again = relay(store).apply(PARTITION, 1, new_command(RESUME_ALL, None, "r").to_bytes())
    assert again is not None
    assert again.message == f"partition {PARTITION}: no failed, partial or cancelled job"


def test_cancelling_an_ended_job_changes_nothing(store):
    cancelled(store, "a")
    reply = relay(store).apply(PARTITION, 0, new_command(CANCEL, "a", "x").to_bytes())
    assert reply is not None and reply.message == "a: already CANCELLED, nothing to cancel"
    assert not store.cancel_requested("a")


def test_a_record_that_is_no_command_is_passed_with_a_reply_when_it_names_one(store):
    assert relay(store).apply(PARTITION, 0, b"garbage") is None
    reply = relay(store).apply(PARTITION, 1, b'{"v": 1, "command_id": "c", "type": "x"}')
    assert reply == Reply("c", False, "unknown command type 'x'")
    assert store.commands_offset(PARTITION) == 2


# -- the ~commands record


def test_the_commands_offset_goes_to_the_changelog_and_back_into_a_restored_store(store, tmp_path):
    store.advance_commands(PARTITION, 7)
    assert marks(store) == [(f"~commands/{PARTITION}", PARTITION)]
    mark = f"~commands/{PARTITION}"
    assert changelog.record_key(mark) == "~commands"
    assert changelog.build(store, mark) == b'{"v":1,"offset":7}'

    producer = FakeProducer()
    asyncio.run(ChangelogWriter(store, producer, CHANGELOG).send_marked())
    [sent] = producer.sent
    assert (sent.topic, sent.partition, sent.key) == (CHANGELOG, PARTITION, b"~commands")

    log = PartitionLog()
    log.feed(0, sent.key, sent.value, sent.headers)
    assert log.commands_offset == 7 and not log.values  # not a job's record
    restored = Store(tmp_path / "next-owner.db", changelog=True)
    try:
        restored.set_partition(PARTITION, OWNED, 6, 1, log.commands_offset)
        assert restored.commands_offset(PARTITION) == 7
        restored.set_partition(PARTITION, OWNED)  # a later change of state keeps it
        record = restored.partition_record(PARTITION)
        assert record is not None and record.commands_offset == 7
    finally:
        restored.close()


def test_a_zombies_commands_offset_is_corrected_under_the_partitions_own_mark(store):
    log = PartitionLog()
    log.feed(0, b"~owner", b'{"fence": 5, "store_id": "s"}', [])
    log.feed(1, b"~commands", b'{"v":1,"offset":9}', fence_header(4))  # after a newer claim
    assert log.invalid == {"~commands"} and log.commands_offset == 0
    store.mark_keys(PARTITION, log.invalid)
    assert marks(store) == [(f"~commands/{PARTITION}", PARTITION)]
    assert changelog.build(store, f"~commands/{PARTITION}") == b'{"v":1,"offset":0}'


# -- reading the commands partitions


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


class CommandsLog:
    """The part of AIOKafkaConsumer the relay uses, over in-memory partitions."""

    def __init__(self) -> None:
        self.logs: dict[int, list[Record]] = {}
        self.position: dict[int, int] = {}
        self.assigned: set[int] = set()

    def add(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        log = self.logs.setdefault(partition, [])
        log.append(Record(len(log), key, value))
        return len(log) - 1

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in tps}
        self.position = {}

    def unsubscribe(self) -> None:
        self.assigned, self.position = set(), {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp.partition in self.assigned
        self.position[tp.partition] = offset

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0) -> dict:
        await asyncio.sleep(0)
        batches = {}
        for tp in tps:
            records = self.logs.get(tp.partition, [])[self.position[tp.partition] :]
            if records:
                batches[tp] = records
                self.position[tp.partition] = records[-1].offset + 1
        return batches


async def test_the_relay_reads_each_owned_partition_from_its_offset_and_answers_there(store):
    job(store, "a")
    job(store, "b")
    consumer, producer, owned = CommandsLog(), FakeProducer(), Owned()
    applied = new_command(CANCEL, "a", "x")
    consumer.add(PARTITION, b"a", applied.to_bytes())  # applied before: offset 1 is next
    store.advance_commands(PARTITION, 1)
    consumer.add(PARTITION, reply_key("old"), Reply("old", True, "done").to_bytes())
    cancel = new_command(CANCEL, "b", "x")
    at = consumer.add(PARTITION, b"b", cancel.to_bytes())
    commands = CommandRelay(KAFKA, "broker:9092", store, producer, owned)

    await commands._pass(consumer)
    await asyncio.sleep(0)
    assert not store.cancel_requested("a") and store.cancel_requested("b")
    assert commands.applied == 1 and store.commands_offset(PARTITION) == at + 1
    [sent] = producer.sent
    assert (sent.topic, sent.partition, sent.key) == (
        COMMANDS,
        PARTITION,
        reply_key(cancel.command_id),
    )
    assert parse_reply(sent.value) == Reply(cancel.command_id, True, "b: cancel requested")

    # lost, then restored here again: read from the offset the restore put in the store
    owned.partitions = set()
    await commands._pass(consumer)
    resume = new_command(RESUME, "b", "x")
    consumer.add(PARTITION, b"b", resume.to_bytes())
    owned.partitions = {PARTITION}
    store.set_partition(PARTITION, OWNED, 6, 3, at + 1)
    commands.partition_ready(PARTITION)
    await commands._pass(consumer)
    assert commands.applied == 2 and not store.cancel_requested("b")


async def test_commands_of_a_partition_suspended_meanwhile_wait_for_it(store):
    job(store, "a")
    consumer, owned = CommandsLog(), Owned()
    commands = CommandRelay(KAFKA, "broker:9092", store, FakeProducer(), owned)
    await commands._pass(consumer)  # assigned, nothing to read
    consumer.add(PARTITION, b"a", new_command(CANCEL, "a", "x").to_bytes())
    ready = owned.ready
    owned.ready = lambda partition: False  # type: ignore[method-assign]  # a rebalance began
    await commands._pass(consumer)
    assert not store.cancel_requested("a")
    owned.ready = ready  # type: ignore[method-assign]
    await commands._pass(consumer)
    assert store.cancel_requested("a")


# -- what the command line says


def test_no_answer_is_one_line_naming_the_partition():
    with pytest.raises(CodegendError) as raised:
        _raise_unanswered(COMMANDS, {2: None}, 30.0)
    assert str(raised.value) == (
        "queued on codegen.commands partition 2; no daemon answered in 30 s; it applies "
        "when one owns the partition"
    )
    with pytest.raises(CodegendError, match="^no job 'a'$"):
        _raise_unanswered(COMMANDS, {0: Reply("c", False, "no job 'a'")}, 30.0)
    _raise_unanswered(COMMANDS, {0: Reply("c", True, "a: cancel requested")}, 30.0)


def test_the_remote_state_knows_which_partition_holds_a_job(tmp_path):
    logs = {0: PartitionLog(), 1: PartitionLog()}
    logs[1].feed(0, b"a", b"{}", [])
    logs[1].feed(1, b"a/request", b"{}", [])
    state = RemoteState(Store(tmp_path / "v.db"), logs)
    try:
        assert state.partition_of("a") == 1 and state.partition_of("b") is None
    finally:
        state.store.close()


def test_the_local_form_in_cluster_mode_writes_an_owned_partition_only_and_replicates(tmp_path):
    from daemon.commands import store as cli
    from daemon.errors import UsageError
    from daemon.store.partitions import DORMANT

    config = tmp_path / "cluster.toml"
    path = tmp_path / "host.db"
    config.write_text(
        '[kafka]\nbootstrap_servers = "broker:9092"\nchangelog_topic = "codegen.changelog"\n'
        f'[store]\npath = "{path}"\n'
    )
    host = Store(path, changelog=True)
    job(host, "mine")
    job(host, "theirs", partition=1)
    host.set_partition(PARTITION, OWNED, 5, 0)
    host.set_partition(1, DORMANT, 3, 0)  # another daemon's now: a stale copy here
    host.delete_marks(host.marks())
    host.close()

    cli.cancel("mine", local=True, wait=30.0, config=config)
    with pytest.raises(UsageError, match="partition 1, which this store does not own"):
        cli.cancel("theirs", local=True, wait=30.0, config=config)
    host = Store(path)
    try:
        assert host.cancel_requested("mine") and not host.cancel_requested("theirs")
        assert marks(host) == [("mine", PARTITION)]  # the relay replicates it
    finally:
        host.close()
