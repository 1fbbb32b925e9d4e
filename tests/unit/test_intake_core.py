"""Intake's poll loop in-process: the fake consumer and producer, a real store in tmp_path.
Offsets are committed only for what is a job or a dead letter; backpressure pauses and
resumes the partitions while the loop keeps polling; a rebalance, a failed commit or a
failed dead letter loses no message. At the default settings unless a test says why."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError

from daemon.errors import StoreFull
from daemon.intake import Intake
from daemon.metrics import Metrics
from daemon.settings import load_settings
from daemon.store import Store
from tests.support.fakes import REQUESTS_TOPIC, FakeConsumer, FakeProducer, Sent
from tests.support.hostile_requests import good_request

TP0, TP1 = TopicPartition(REQUESTS_TOPIC, 0), TopicPartition(REQUESTS_TOPIC, 1)
SETTINGS = load_settings()
NAMED_BAD = json.dumps({"request_id": "bad"}).encode()  # invalid; gets a job.rejected


class Loop:
    """An intake over a fake consumer and producer, its poll loop run as a task."""

    def __init__(self, store: Store, *tps: TopicPartition, **intake: Any) -> None:
        self.consumer = FakeConsumer(*(tps or (TP0,)))
        self.producer = FakeProducer()
        self.metrics = Metrics()
        self.woken = 0
        self.intake = Intake(
            self.consumer,
            self.producer,
            store,
            SETTINGS.kafka,
            SETTINGS.llm.max_image_bytes,
            self._wake,
            metrics=self.metrics,
            allowed_models=SETTINGS.allowed_models(),
            **{"max_unfinished": SETTINGS.jobs.max_unfinished, **intake},
        )
        self.intake.subscribe()
        self.task: asyncio.Task[None] | None = None

    def _wake(self) -> None:
        self.woken += 1

    def start(self) -> None:
        self.task = asyncio.create_task(self.intake.run())

    async def until(self, condition, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                assert self.task is None or not self.task.done() or self.task.result()
                await asyncio.sleep(0.001)

    async def stop(self) -> None:
        self.intake.stop()
        assert self.task is not None
        await self.task


def job_ids(store: Store) -> list[str]:
    return [row["job_id"] for row in store.jobs()]


def sources(producer: FakeProducer) -> list[str]:
    return [dict(sent.headers)["source"].decode() for sent in producer.sent]


def rejections(store: Store, job_id: str) -> int:
    return sum(
        row.type == "job.rejected" for row in store.unpublished(10_000, ()) if row.job_id == job_id
    )


def seeks_of(consumer: FakeConsumer) -> int:
    return sum(name == "seek" for name, _ in consumer.calls)


async def held_by_a_full_disk(store: Store, method: str) -> Loop:
    """A running loop whose one record (request "a") found the disk full in ``method``."""
    loop = Loop(store)
    full_once(store, method)
    loop.consumer.add(TP0, good_request(request_id="a"))
    loop.start()
    await loop.until(lambda: loop.consumer.paused() == {TP0})
    assert "disk full" in (loop.metrics.readiness.reason() or "")
    return loop


def full_once(store: Store, method: str) -> None:
    """The store's ``method`` finds the disk full once, then works."""
    real = getattr(store, method)
    full = [StoreFull("store: database or disk is full")]

    def once(*args: Any, **kwargs: Any) -> Any:
        if full:
            raise full.pop()
        return real(*args, **kwargs)

    setattr(store, method, once)


async def test_each_batch_becomes_jobs_in_order_then_its_offsets_are_committed(store):
    loop = Loop(store, TP0, TP1)
    loop.consumer.add(TP0, *(good_request(request_id=f"a{n}") for n in range(3)))
    loop.consumer.add(TP1, good_request(request_id="b0"), b"not json")
    loop.start()
    await loop.until(lambda: loop.consumer.committed == {TP0: 3, TP1: 2})
    await loop.stop()
    assert loop.consumer.topics == [SETTINGS.kafka.requests_topic]
    assert job_ids(store) == ["a0", "a1", "a2", "b0"]
    assert sources(loop.producer) == [f"{REQUESTS_TOPIC}:1:1"]
    assert loop.producer.sent[0].topic == SETTINGS.kafka.dead_letter_topic
    # one commit per partition and batch, each the offset after its last record
    assert loop.consumer.commits() == [{TP0: 3}, {TP1: 2}]
    assert loop.woken == 1  # the scheduler and the relay are told once per batch


async def test_too_many_unfinished_jobs_pause_intake_until_nine_tenths(store):
    # jobs.max_unfinished is 10,000 by default: ten jobs show the same pause and resume.
    loop = Loop(store, max_unfinished=10)
    loop.consumer.add(TP0, *(good_request(request_id=f"r{n}") for n in range(12)))
    loop.start()
    await loop.until(lambda: loop.consumer.paused() == {TP0})
    polls = loop.consumer.polls
    await loop.until(lambda: loop.consumer.polls > polls + 5)  # it polls on: stays in the group
    assert len(job_ids(store)) == 10 and loop.consumer.committed == {TP0: 10}
    assert ("seek", (TP0, 10)) in loop.consumer.calls  # the record is read again later
    store.end_job("r0")  # 9 unfinished: not below nine tenths yet
    await asyncio.sleep(0.02)
    assert loop.consumer.paused() == {TP0} and len(job_ids(store)) == 10
    store.end_job("r1")
    await loop.until(lambda: loop.consumer.committed == {TP0: 12})
    await loop.stop()
    assert job_ids(store) == [f"r{n}" for n in range(12)]
    moves = [name for name, _ in loop.consumer.calls if name in ("pause", "resume")]
    assert moves[:2] == ["pause", "resume"]


async def test_a_failed_commit_is_made_by_the_next_one(store):
    loop = Loop(store)
    loop.consumer.commit_errors.append(CommitFailedError("rebalancing"))
    loop.consumer.add(TP0, good_request(request_id="a"))
    loop.start()
    await loop.until(lambda: loop.consumer.polls > 3)
    assert loop.consumer.committed == {}
    loop.consumer.add(TP0, good_request(request_id="b"))
    await loop.until(lambda: loop.consumer.committed == {TP0: 2})
    await loop.stop()
    assert job_ids(store) == ["a", "b"]


async def test_a_partition_revoked_mid_batch_is_committed_as_far_as_processed(store):
    loop = Loop(store, TP0)
    loop.consumer.add(TP0, good_request(request_id="a"), b"bad", good_request(request_id="c"))

    async def rebalance_at_the_dead_letter(sent: Sent) -> None:
        if not loop.consumer.logs.get(TP1):
            loop.consumer.add(TP1, good_request(request_id="other"))
            await loop.consumer.rebalance([TP1])  # TP0 to another member

    loop.producer.before_send = rebalance_at_the_dead_letter
    loop.start()
    await loop.until(lambda: loop.consumer.committed.get(TP1) == 1)
    # committed on revocation: the record before the one being dead-lettered
    assert ("commit", {TP0: 1}) in loop.consumer.calls
    assert loop.consumer.committed[TP0] == 1
    await loop.consumer.rebalance([TP0, TP1])  # back: read again from the committed offset
    await loop.until(lambda: loop.consumer.committed.get(TP0) == 3)
    await loop.stop()
    assert sorted(job_ids(store)) == ["a", "c", "other"]
    assert set(sources(loop.producer)) == {f"{REQUESTS_TOPIC}:0:1"}


async def test_a_partition_revoked_mid_batch_is_handled_no_further(store):
    loop = Loop(store, TP0)
    loop.consumer.add(TP0, b"bad", good_request(request_id="b"), good_request(request_id="c"))
    create_job = store.create_job

    def full(*args, **kwargs):
        raise StoreFull("store: database or disk is full")

    async def rebalance_at_the_dead_letter(sent: Sent) -> None:
        if loop.consumer.assignment() == {TP0}:
            store.create_job = full  # the next record would wait for room (a seek back)
            await loop.consumer.rebalance([TP1])

    loop.producer.before_send = rebalance_at_the_dead_letter
    loop.start()
    await loop.until(lambda: loop.consumer.assignment() == {TP1})
    await asyncio.sleep(0.02)
    assert not loop.task.done()  # the records of the partition gone are left to its owner
    store.create_job = create_job
    await loop.stop()
    assert job_ids(store) == []


async def test_a_full_disk_at_commit_holds_the_offsets_and_intake(store):
    loop = await held_by_a_full_disk(store, "sync")
    assert loop.consumer.committed == {} and job_ids(store) == ["a"]
    loop.consumer.add(TP0, good_request(request_id="b"))
    # taken after the backoff (1 s): the job of the first was on disk; both are committed
    await loop.until(lambda: loop.consumer.committed == {TP0: 2})
    await loop.stop()
    assert job_ids(store) == ["a", "b"] and loop.metrics.readiness.reason() is None


async def test_a_full_disk_at_commit_is_tried_again_though_no_message_follows(store):
    loop = await held_by_a_full_disk(store, "sync")
    # the next try (after 1 s) syncs and commits: intake resumes and is ready again
    await loop.until(lambda: loop.consumer.committed == {TP0: 1})
    await loop.until(lambda: not loop.consumer.paused())
    assert loop.metrics.readiness.reason() is None
    await loop.stop()
    assert job_ids(store) == ["a"]


async def test_a_rebalance_while_the_disk_is_full_leaves_intake_paused(store):
    loop = await held_by_a_full_disk(store, "create_job")
    await loop.consumer.rebalance([TP0])  # every pause forgotten; the next try is in 1 s
    fetches, seeks = loop.consumer.fetches, seeks_of(loop.consumer)
    await asyncio.sleep(0.2)
    # the record is fetched once more, sought back to and its partition paused again
    assert loop.consumer.fetches - fetches <= 1 and seeks_of(loop.consumer) - seeks <= 1
    assert loop.consumer.paused() == {TP0}
    await loop.until(lambda: loop.consumer.committed == {TP0: 1})
    await loop.stop()
    assert job_ids(store) == ["a"] and loop.metrics.readiness.reason() is None


@pytest.mark.parametrize("failing", ["send", "delivery"])
async def test_a_dead_letter_that_cannot_be_sent_is_tried_again_in_its_place(store, failing):
    loop = Loop(store, TP0, TP1)
    errors = loop.producer.send_errors if failing == "send" else loop.producer.ack_errors
    errors.append(KafkaTimeoutError())
    loop.consumer.add(TP0, good_request(request_id="a"), NAMED_BAD, good_request(request_id="c"))
    loop.consumer.add(TP1, good_request(request_id="d"))
    loop.start()
    await loop.until(lambda: loop.consumer.paused() == {TP0})
    await loop.until(lambda: loop.consumer.committed == {TP0: 1, TP1: 1})  # TP1 goes on
    assert job_ids(store) == ["a", "d"] and loop.producer.sent == []
    # after the backoff (1 s) the same message: its dead letter, then the rest of TP0
    await loop.until(lambda: loop.consumer.committed == {TP0: 3, TP1: 1})
    await loop.stop()
    assert job_ids(store) == ["a", "d", "c"] and sources(loop.producer) == [f"{REQUESTS_TOPIC}:0:1"]
    assert rejections(store, "bad") == 1


async def test_a_dead_letter_waiting_at_a_stop_is_sent_at_the_next_start(store):
    loop = Loop(store)
    loop.producer.down = KafkaTimeoutError()
    loop.consumer.add(TP0, good_request(request_id="a"), NAMED_BAD, good_request(request_id="c"))
    loop.start()
    await loop.until(lambda: loop.consumer.paused() == {TP0})
    await loop.stop()
    assert loop.consumer.committed == {TP0: 1} and job_ids(store) == ["a"]
    again = Loop(store)  # the next start reads the partition from its committed offset
    again.consumer.logs, again.consumer.committed = loop.consumer.logs, loop.consumer.committed
    again.consumer.position = dict(loop.consumer.committed)
    again.start()
    await again.until(lambda: again.consumer.committed == {TP0: 3})
    await again.stop()
    assert job_ids(store) == ["a", "c"] and sources(again.producer) == [f"{REQUESTS_TOPIC}:0:1"]
    assert rejections(store, "bad") == 1  # stored at the first start, not again
