"""CodegendAssignor in a real group on the test broker (docs/cluster-design.md, section 6.2):
every member learns the size of the group through the assignment's user_data, and the sticky
assignment moves only what a membership change needs.

What tansu does, as this test found it (open question 1 of section 8.4): SyncGroup hands each
member the assignment's user_data exactly as the leader sent it, and JoinGroup hands the
leader each member's metadata user_data as sent; generation ids start at 0 for a new group
and go up by one per rebalance; member ids are ``<client_id>-<uuid4>``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer

from daemon.kafka import CodegendAssignor, group_generation, group_members, make_consumer
from daemon.settings import Settings
from daemon.topics import ensure_topics

PARTITIONS = 3
SETTLE_TIMEOUT_S = 30.0


@pytest.fixture
def settings(make_settings) -> Settings:
    # three partitions, so that two members split them 2 and 1 and a third takes one of them
    return make_settings(kafka={"topic_partitions": PARTITIONS})


class Group:
    """The test's consumers of one group, and what the group's leaders were given to assign."""

    def __init__(self, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
        self._settings = settings
        self._stack = stack
        self.leader_saw: list[dict[str, set[int]]] = []  # per assign: member -> partitions sent

    async def join(self) -> AIOKafkaConsumer:
        kafka = self._settings.kafka
        consumer = make_consumer(kafka, kafka.bootstrap_servers)
        self._record(assignor(consumer))
        consumer.subscribe([kafka.requests_topic])
        await consumer.start()
        self._stack.push_async_callback(consumer.stop)  # a second stop() is a no-op
        return consumer

    def _record(self, own: CodegendAssignor) -> None:
        assign = own.assign

        def recording(cluster, members):
            self.leader_saw.append(
                {
                    member_id: {tp.partition for tp in own.parse_member_metadata(meta).partitions}
                    for member_id, meta in members.items()
                }
            )
            return assign(cluster, members)

        own.assign = recording


def assignor(consumer: AIOKafkaConsumer) -> CodegendAssignor:
    own = consumer._partition_assignment_strategy[0]
    assert isinstance(own, CodegendAssignor)
    return own


def owned(consumer: AIOKafkaConsumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


async def settled(*members: AIOKafkaConsumer) -> list[set[int]]:
    """Each member's partitions once the group is these members, all partitions assigned
    and every member told the group's size."""

    def done() -> bool:
        held = [owned(member) for member in members]
        return (
            all(held)
            and sorted(p for partitions in held for p in partitions) == list(range(PARTITIONS))
            and all(group_members(member) == len(members) for member in members)
        )

    await until(done)
    return [owned(member) for member in members]


async def until(condition: Callable[[], bool], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def group(settings) -> AsyncIterator[Group]:
    kafka = settings.kafka
    await ensure_topics(kafka.bootstrap_servers, [kafka.requests_topic], PARTITIONS)
    async with contextlib.AsyncExitStack() as stack:
        yield Group(settings, stack)


async def test_members_learn_the_group_size_and_keep_their_partitions(group):
    first, second = await group.join(), await group.join()
    # settled() waits for group_members == 2 on both: the count crossed SyncGroup intact
    held_first, held_second = await settled(first, second)
    generation = group_generation(first)
    assert generation == group_generation(second) >= 0
    # aiokafka's internal generation is what the assignor recorded at the assignment
    assert assignor(first).generation == assignor(second).generation == generation

    await second.stop()  # leaves the group: the survivor takes everything
    (held_first,) = await settled(first)
    assert held_first == set(range(PARTITIONS))
    assert group_generation(first) > generation

    third = await group.join()
    held_first, held_third = await settled(first, third)
    assert len(held_first) == 2 and held_third == set(range(PARTITIONS)) - held_first

    fourth = await group.join()
    after = await settled(first, third, fourth)
    # each old member keeps one of its own; only the partition the newcomer needs moves
    assert after[0] <= held_first and after[1] == held_third
    assert after[2] == held_first - after[0]
    # tansu relays the JoinGroup metadata as sent: the last leader saw the old members'
    # previous partitions (the sticky assignor's user_data) and the newcomer's none
    claims = group.leader_saw[-1]
    assert sorted(map(sorted, claims.values())) == sorted(
        [[], sorted(held_third), sorted(held_first)]
    )
