"""CodegendAssignor on hand-made group metadata, no broker: the member count it sends in the
assignments, and the sticky assignor's state kept per instance with real generations."""

from __future__ import annotations

import json

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyAssignorUserDataV1
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from daemon.kafka import CodegendAssignor, group_generation, group_members, make_consumer
from daemon.settings import KafkaSettings

TOPIC = "requests"


class Cluster:
    """The two questions the sticky assignor asks of aiokafka's ClusterMetadata."""

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions

    def topics(self) -> set[str]:
        return {TOPIC}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self._partitions)) if topic == TOPIC else None


def wire(value):
    """``value`` as the other side of the group protocol decodes it."""
    return type(value).decode(value.encode())


def assignment_of(
    partitions: list[int], user_data: bytes = b""
) -> ConsumerProtocolMemberAssignment:
    return ConsumerProtocolMemberAssignment(0, [(TOPIC, partitions)], user_data)


def owned(assignment: ConsumerProtocolMemberAssignment) -> set[int]:
    return {tp.partition for tp in assignment.partitions()}


def test_every_member_is_told_the_size_of_the_group():
    members = {name: wire(CodegendAssignor().metadata([TOPIC])) for name in ("a", "b", "c")}
    assignments = CodegendAssignor().assign(Cluster(3), members)
    assert sorted(owned(a).pop() for a in assignments.values()) == [0, 1, 2]
    for assignment in assignments.values():
        assert json.loads(assignment.user_data) == {"members": 3}
    member = CodegendAssignor()
    member.on_assignment(wire(assignments["b"]))
    assert member.members == 3


def test_the_count_is_unknown_without_it_and_during_a_join():
    member = CodegendAssignor()
    for user_data in (b"", b"not json", b"[3]", b'{"members": "3"}', b'{"members": true}'):
        member.on_assignment(assignment_of([0], user_data))
        assert member.members == 0
    member.on_assignment(assignment_of([0], b'{"members": 2}'))
    assert member.members == 2
    member.metadata([TOPIC])  # a new join: the group may be changing
    assert member.members == 0


def test_each_instance_reports_its_own_previous_assignment_and_generation():
    first, second = CodegendAssignor(), CodegendAssignor()
    first.generation_of = lambda: 7
    first.on_assignment(wire(assignment_of([0, 2], b'{"members": 2}')))
    sent = StickyAssignorUserDataV1.decode(first.metadata([TOPIC]).user_data)
    assert [(t, list(p)) for t, p in sent.previous_assignment] == [(TOPIC, [0, 2])]
    assert sent.generation == 7
    assert second.metadata([TOPIC]).user_data == b""  # nothing leaked through the class
    assert second.member_assignment is None


def test_a_new_member_takes_only_what_balance_needs():
    cluster = Cluster(3)
    old = {name: CodegendAssignor() for name in ("a", "b")}
    first = CodegendAssignor().assign(
        cluster, {name: wire(assignor.metadata([TOPIC])) for name, assignor in old.items()}
    )
    for name, assignor in old.items():
        assignor.generation_of = lambda: 1
        assignor.on_assignment(wire(first[name]))
    joined = {name: wire(assignor.metadata([TOPIC])) for name, assignor in old.items()}
    joined["c"] = wire(CodegendAssignor().metadata([TOPIC]))
    second = old["a"].assign(cluster, joined)
    for name in ("a", "b"):
        assert owned(second[name]) <= owned(first[name]) and len(owned(second[name])) == 1
    assert json.loads(second["c"].user_data) == {"members": 3}


def test_the_later_generation_keeps_a_partition_claimed_twice():
    # a member the group dropped (its session ran out) rejoins claiming partition 0, which
    # the group gave "current" in a later generation; with the -1 aiokafka's own sticky
    # assignor always reports, the first claim read would win
    stale, current = CodegendAssignor(), CodegendAssignor()
    stale.generation_of, current.generation_of = (lambda: 3), (lambda: 5)
    stale.on_assignment(assignment_of([0, 1]))
    current.on_assignment(assignment_of([0, 2]))
    members = {"stale": stale.metadata([TOPIC]), "current": current.metadata([TOPIC])}
    assignments = CodegendAssignor().assign(Cluster(3), {k: wire(v) for k, v in members.items()})
    assert owned(assignments["current"]) == {0, 2}
    assert owned(assignments["stale"]) == {1}


def test_the_assignment_decodes_as_aiokafka_reads_it():
    members = {"a": wire(CodegendAssignor().metadata([TOPIC]))}
    encoded = CodegendAssignor().assign(Cluster(2), members)["a"].encode()
    decoded = ConsumerProtocol.ASSIGNMENT.decode(encoded)
    assert decoded.partitions() == [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    assert json.loads(decoded.user_data) == {"members": 1}


async def test_the_consumer_has_an_assignor_of_its_own_and_round_robin_after_it():
    kafka = KafkaSettings()
    first, second = (make_consumer(kafka, "127.0.0.1:9") for _ in range(2))
    try:
        own = first._partition_assignment_strategy
        assert isinstance(own[0], CodegendAssignor) and own[1] is RoundRobinPartitionAssignor
        assert own[0] is not second._partition_assignment_strategy[0]
        own[0].on_assignment(assignment_of([0], b'{"members": 2}'))
        assert (group_members(first), group_members(second)) == (2, 0)
        assert group_generation(first) == -1  # not started: no coordinator yet
    finally:
        await first.stop()  # never started: closes it without a broker
        await second.stop()
