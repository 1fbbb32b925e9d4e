"""Ownership of requests partitions in cluster mode (docs/cluster-design.md sections 2 and 3).

The group coordinator assigns each requests partition to one daemon. Given a partition,
the daemon restores it before it takes a request from it:

1. it proves it is a current member of the group (an offset commit that changes
   nothing: the coordinator refuses one from an older generation);
2. it reads the matching changelog partition to its end, writes its claim (a fence
   greater than every claim before), and reads on to its claim;
3. it replaces its local rows of the partition with the valid state read, counts the
   phases found running as interrupted, and announces the unfinished jobs resumed
   (``failover`` when the previous claim was another store's);
4. the partition is ready: intake reads it, the scheduler runs its jobs, the relay
   sends its records and events.

The consumer that read the partition then stays on it as its tail reader: a record this
daemon wrote is confirmed once the tail reader has read it with no newer claim before it,
and only then may the events committed with it be published. A newer claim read by the
tail reader means the partition has another owner: its jobs stop here at once, and nothing
more of it is sent. Every model call and every phase start first checks that the
partition is still ready and that its tail reader fetched recently (a process paused past
its session learns of a newer claim before it spends anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from daemon import changelog
from daemon.claims import OWNER_KEY, Claim, PartitionLog, fence_header, new_claim
from daemon.errors import StoreFull
from daemon.jobs import log_death
from daemon.kafka import group_generation, make_changelog_reader
from daemon.metrics import Metrics
from daemon.progress import NoProgress, ProgressFile, job_key
from daemon.settings import KafkaSettings
from daemon.store import Store
from daemon.store.partitions import DORMANT, OWNED, RESTORING

log = logging.getLogger(__name__)
FETCH_WAIT_MS = 100
CONFIRM_TIMEOUT_S = 10.0
RESTORE_BACKOFF_S = (1.0, 30.0)
CLAIM_TRIES = 3
READINESS_CAUSE = "partitions"


class OwnershipLost(asyncio.CancelledError):
    """The partition of the job has another owner now: the job stops here, as when it is
    cancelled (its phase is interrupted locally, neither failed nor counted as a death)."""


class NotOwner(Exception):
    """The restore found this daemon is no longer the partition's owner."""


@dataclass(eq=False)
class _Partition:
    number: int
    generation: int
    state: str = RESTORING
    suspended: bool = False
    log: PartitionLog = field(default_factory=PartitionLog)
    claim: Claim | None = None  # ours, once accepted
    consumer: AIOKafkaConsumer | None = None
    task: asyncio.Task[None] | None = None
    last_fetch: float = 0.0
    read: asyncio.Event = field(default_factory=asyncio.Event)  # set at each fetch
    restored_at: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state == OWNED and not self.suspended


class Ownership:
    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap_servers: str,
        store: Store,
        producer: AIOKafkaProducer,
        group: AIOKafkaConsumer,
        metrics: Metrics | None = None,
        progress: ProgressFile | NoProgress | None = None,
        on_ready: Callable[[int], None] = lambda partition: None,
        on_lost: Callable[[set[int]], None] = lambda partitions: None,
    ) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap_servers
        self._store = store
        self._store_id = store.store_id()
        self._producer = producer
        self._group = group
        self._metrics = metrics or Metrics()
        self._progress = progress or NoProgress()
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._parts: dict[int, _Partition] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every partition's, until it ends
        self._closed = False
        self._assigned = False  # the group gave this daemon an assignment (maybe empty)
        self._lost: set[int] = set()  # partitions this process owned or restored, then lost
        self._fresh_s = kafka.session_timeout_ms / 2000
        self.restores = 0  # how many partitions were restored (a figure for tests and metrics)

    # -- what the other parts ask

    def ready_partitions(self) -> frozenset[int]:
        return frozenset(p.number for p in self._parts.values() if p.ready)

    def owned_partitions(self) -> frozenset[int]:
        """The partitions restored and not lost: their records and events go out, also
        while a rebalance is under way."""
        return frozenset(p.number for p in self._parts.values() if p.state == OWNED)

    def ready(self, partition: int) -> bool:
        part = self._parts.get(partition)
        return part is not None and part.ready

    def restoring(self, partition: int) -> bool:
        part = self._parts.get(partition)
        return part is not None and part.state == RESTORING

    @property
    def settled(self) -> bool:
        """The group has assigned this daemon its partitions and none is restoring."""
        return self._assigned and not any(p.state == RESTORING for p in self._parts.values())

    def fence(self, partition: int) -> int | None:
        part = self._parts.get(partition)
        if part is None or part.state != OWNED or part.claim is None:
            return None
        return part.claim.fence

    async def confirm(self, offsets: Mapping[int, int]) -> set[int]:
        """Wait (up to CONFIRM_TIMEOUT_S) until each partition's tail reader has read its
        offset; the partitions that are confirmed and still owned."""
        confirmed: set[int] = set()
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        for number, offset in offsets.items():
            part = self._parts.get(number)
            while part is not None and part.state == OWNED and part.log.last_offset < offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                part.read.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(part.read.wait(), left)
            if part is not None and part.state == OWNED and part.log.last_offset >= offset:
                confirmed.add(number)
        return confirmed

    async def guard(self, job_id: str) -> None:
        """Before a phase starts or a model call goes out: the job's partition is ready
        and its tail reader fetched within half a session. Waits while the partition is
        suspended (a rebalance under way) or its last fetch is old (the process was paused);
        raises OwnershipLost once the partition is not this daemon's."""
        partition = self._store.partition_of_job(job_id)
        while True:
            part = self._parts.get(partition) if partition is not None else None
            if part is None or part.state != OWNED:
                raise OwnershipLost(f"partition {partition} of job {job_id} is not this daemon's")
            if not part.suspended and time.monotonic() - part.last_fetch <= self._fresh_s:
                return
            part.read.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(part.read.wait(), self._fresh_s)

    def forget_dormant(self) -> set[int]:
        """Delete this store's rows of the partitions it lost (another daemon owns them,
        and a restore here would replace them anyway). Call once their jobs' tasks have
        ended. Returns them. The rows of partitions this store owned in an earlier run stay
        until the group assigns them: the member that still holds one may be this store's
        own previous process, whose session has not expired yet."""
        dormant = (self._store.local_partitions() & self._lost) - set(self._parts)
        self._lost -= dormant
        for number in sorted(dormant):
            jobs = self._store.forget_partition(number)
            log.info("partition %d: %d jobs another daemon owns left this store", number, jobs)
        return dormant

    # -- what the rebalance listener tells

    def suspend(self, partitions: Collection[int]) -> None:
        """Revoked (every partition is, at each rebalance): start nothing new for them
        until the assignment says which stay."""
        for number in partitions:
            if (part := self._parts.get(number)) is not None:
                part.suspended = True

    def reassign(self, assigned: Collection[int]) -> tuple[set[int], set[int], set[int]]:
        """The group's new assignment: partitions kept resume, lost ones stop, new ones
        restore (in tasks). Returns (kept, lost, new)."""
        generation = group_generation(self._group)
        kept: set[int] = set()
        lost: set[int] = set()
        new: set[int] = set()
        if self._closed:  # a join that completes while the consumer leaves the group
            return kept, lost, new
        self._assigned = True
        for number in list(self._parts):
            if number not in assigned:
                lost.add(number)
                self._lose(number, "assigned to another member")
        for number in assigned:
            part = self._parts.get(number)
            if part is not None and part.state == OWNED:
                part.suspended = False
                part.generation = generation
                part.read.set()  # whoever waited for the rebalance goes on
                kept.add(number)
                continue
            if part is not None:
                self._stop(part)
            new.add(number)
            self._start_restore(number, generation)
        self._update_readiness()
        return kept, lost, new

    def _start_restore(self, number: int, generation: int) -> None:
        part = _Partition(number, generation)
        self._parts[number] = part
        self._store.set_partition(number, RESTORING)
        part.task = asyncio.create_task(self._own(part), name=f"partition:{number}")
        self._tasks.add(part.task)
        part.task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for part in list(self._parts.values()):
            self._stop(part)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _lose(self, number: int, why: str) -> None:
        part = self._parts.pop(number, None)
        if part is None:
            return
        was_owned = part.state == OWNED
        self._lost.add(number)
        self._stop(part)
        with contextlib.suppress(Exception):  # a full disk: the state row is only a hint
            self._store.set_partition(number, DORMANT)
        if was_owned:
            log.info("partition %d: no longer ours (%s)", number, why)
        self._on_lost({number})
        self._update_readiness()

    def _stop(self, part: _Partition) -> None:
        part.state = DORMANT
        part.read.set()  # wake whoever waits on it: it is no longer ready
        if part.task is not None and part.task is not asyncio.current_task():
            part.task.cancel()

    # -- a partition's life: restore, then tail

    async def _own(self, part: _Partition) -> None:
        tp = TopicPartition(self._kafka.changelog_topic, part.number)
        backoff = RESTORE_BACKOFF_S[0]
        while part.state == RESTORING:
            consumer = self._changelog_consumer()
            part.consumer = consumer
            try:
                await consumer.start()
                consumer.assign([tp])
                async with asyncio.timeout(self._kafka.restore_timeout_s):
                    await self._restore(part, consumer, tp)
            except NotOwner as exc:
                log.warning("partition %d: not restored: %s", part.number, exc)
                await self._close(consumer)
                self._lose(part.number, str(exc))
                return
            except (KafkaError, TimeoutError, OSError, StoreFull) as exc:
                # The broker, the restore's time limit or a full disk: the partition stays
                # paused and is restored again after a backoff.
                await self._close(consumer)
                why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
                self._metrics.readiness.set(
                    f"{READINESS_CAUSE}:{part.number}",
                    f"restoring partition {part.number}: {why}",
                )
                log.warning(
                    "partition %d: restore failed (%s); again in %.0f s", part.number, why, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTORE_BACKOFF_S[1])
                continue
            except BaseException:
                await self._close(consumer)
                raise
        try:
            await self._tail(part, consumer, tp)
        finally:
            await self._close(consumer)

    def _changelog_consumer(self) -> AIOKafkaConsumer:
        return make_changelog_reader(self._kafka, self._bootstrap, FETCH_WAIT_MS)

    @staticmethod
    async def _close(consumer: AIOKafkaConsumer) -> None:
        """Stop the consumer, all of it, even when this task is cancelled meanwhile (a
        consumer half stopped leaves its connections open)."""
        stopping = asyncio.ensure_future(consumer.stop())
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await stopping
            raise
        except Exception:  # noqa: BLE001 - closing: nothing left to do with its error
            log.debug("closing a changelog reader failed", exc_info=True)

    async def _restore(
        self, part: _Partition, consumer: AIOKafkaConsumer, tp: TopicPartition
    ) -> None:
        started = time.monotonic()
        await self._prove_membership(part.number)
        part.log = PartitionLog()
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        await self._read_to(part, consumer, tp, end - 1)
        previous = part.log.claim
        claim = await self._claim(part, consumer, tp, previous)
        imported = self._import(part, previous, claim)
        part.log.forget_values()  # the tail reader needs the claims, not the state
        part.claim = claim
        part.state = OWNED
        part.restored_at = time.monotonic()
        self.restores += 1
        self._metrics.readiness.clear(f"{READINESS_CAUSE}:{part.number}")
        log.info(
            "partition %d: restored %d jobs in %.2f s (fence %d%s)",
            part.number,
            imported,
            part.restored_at - started,
            claim.fence,
            "" if previous is None else f", after {previous.host or previous.store_id}'s",
        )
        self._update_readiness()
        self._on_ready(part.number)

    async def _prove_membership(self, number: int) -> None:
        """An offset commit of what the group has for the partition (or its beginning):
        it changes nothing, and the coordinator refuses it from a member that is not
        current (CommitFailedError)."""
        tp = TopicPartition(self._kafka.requests_topic, number)
        if tp not in self._group.assignment():
            raise NotOwner(f"{tp.topic}:{number} is not assigned to this daemon any more")
        offset = await self._group.committed(tp)
        if offset is None:
            offset = (await self._group.beginning_offsets([tp]))[tp]
        try:
            await self._group.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            raise NotOwner(f"not a current member of the group ({type(exc).__name__})") from None

    async def _claim(
        self,
        part: _Partition,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        previous: Claim | None,
    ) -> Claim:
        """Write this daemon's claim and read on to it; the claim once it is the accepted
        one (a stale claimant that came first with an equal fence is outbid)."""
        member_id = str(getattr(getattr(self._group, "_coordinator", None), "member_id", ""))
        for _ in range(CLAIM_TRIES):
            claim = new_claim(self._store_id, part.generation, member_id, part.log.claim)
            metadata = await self._producer.send_and_wait(
                tp.topic,
                value=claim.to_bytes(previous),
                key=OWNER_KEY.encode(),
                partition=tp.partition,
                headers=fence_header(claim.fence),
            )
            await self._read_to(part, consumer, tp, metadata.offset)
            accepted = part.log.claim
            if accepted is not None and accepted.offset == metadata.offset:
                return accepted
            if accepted is not None and accepted.fence > claim.fence:
                raise NotOwner(f"a newer claim (fence {accepted.fence}) came first")
        raise NotOwner("the claim was outbid repeatedly")

    async def _read_to(
        self, part: _Partition, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
    ) -> None:
        while part.log.last_offset < offset:
            await self._fetch(part, consumer, tp)

    async def _fetch(
        self, part: _Partition, consumer: AIOKafkaConsumer, tp: TopicPartition
    ) -> list[str]:
        """One fetch, fed to the partition's log; the kinds of record read."""
        batches = await consumer.getmany(tp, timeout_ms=FETCH_WAIT_MS * 5, max_records=5000)
        kinds = []
        for record in batches.get(tp, []):
            kinds.append(part.log.feed(record.offset, record.key, record.value, record.headers))
        if not batches.get(tp):
            # No record: the position is where the last fetch left it. Reading past the end
            # of a partition whose last offsets were compacted away or aborted.
            position = await consumer.position(tp)
            part.log.last_offset = max(part.log.last_offset, position - 1)
        part.last_fetch = time.monotonic()
        part.read.set()
        return kinds

    def _import(self, part: _Partition, previous: Claim | None, claim: Claim) -> int:
        """The valid state read replaces this store's rows of the partition; returns how
        many jobs the partition has now."""
        store, number = self._store, part.number
        commands_offset: int | None = part.log.commands_offset
        if previous is None and not part.log.values:
            # Never owned in cluster mode: what this store has of the partition (a store
            # from before cluster mode) is its state, and goes to the changelog.
            store.seed_partition(number)
        elif self._holds_latest(number, previous):
            # Nobody claimed it since this store's own last claim, whose rows are here: they
            # are the newest state (what the changelog has came from them; what it lacks is
            # still marked, and goes out now). Kafka Streams' restore from its checkpoint.
            commands_offset = None  # this store's own, as new as its rows
            log.info("partition %d: this store's rows are the latest; kept", number)
        else:
            store.forget_partition(number)
            changelog.apply_all(store, part.log.values.items())
        ours = previous is None or previous.store_id == self._store_id
        for job_id, phase in store.running_phases_of(number):
            # Where a phase died is known only from this store's own progress file.
            point = self._progress.previous.get((job_key(job_id), phase)) if ours else None
            death = store.record_death(job_id, phase, point)
            if death is not None:
                log_death(job_id, phase, death)
        if part.log.invalid:
            store.mark_keys(number, part.log.invalid)  # corrections: section 3.3
        store.set_partition(number, OWNED, claim.fence, claim.offset, commands_offset)
        reason = "daemon restart" if ours else "failover"
        for job_id, state in store.announce_resumed(reason, partition=number):
            log.info("resuming at %s (%s)", state.name, reason, extra={"job_id": job_id})
        if held := store.release_held(partition=number):
            log.info("%d jobs put aside for the model API's refusal run again", held)
        return len(store.partition_jobs(number))

    def _holds_latest(self, number: int, previous: Claim | None) -> bool:
        """Whether the latest claim before ours is this store's own, and its rows of the
        partition are those written under it (not forgotten since)."""
        if previous is None or previous.store_id != self._store_id:
            return False
        record = self._store.partition_record(number)
        return record is not None and record.fence == previous.fence

    async def _tail(self, part: _Partition, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        """Read the partition for as long as it is ours: confirms what this daemon wrote,
        corrects what a zombie wrote after our claim, and notices a newer claim."""
        assert part.claim is not None
        while part.state == OWNED:
            try:
                kinds = await self._fetch(part, consumer, tp)
            except KafkaError as exc:
                log.warning("partition %d: tail read failed (%r)", part.number, exc)
                await asyncio.sleep(0.5)
                continue
            accepted = part.log.claim
            if accepted is not None and accepted.offset != part.claim.offset:
                log.warning(
                    "partition %d: claimed by %s (fence %d, ours %d): its jobs stop here",
                    part.number,
                    accepted.host or accepted.store_id,
                    accepted.fence,
                    part.claim.fence,
                )
                self._lose(part.number, "claimed by another daemon")
                if (
                    TopicPartition(self._kafka.requests_topic, part.number)
                    in self._group.assignment()
                ):
                    # Still assigned here: either the assignment is stale (the restore's
                    # membership proof fails, and the rebalance follows) or the other
                    # claim is (this one outbids it).
                    self._start_restore(part.number, group_generation(self._group))
                return
            if "invalid" in kinds:
                self._store.mark_keys(part.number, part.log.invalid)
                part.log.invalid.clear()

    def _update_readiness(self) -> None:
        restoring = sorted(p.number for p in self._parts.values() if p.state == RESTORING)
        if restoring:
            self._metrics.readiness.set(
                READINESS_CAUSE, f"restoring partition {', '.join(map(str, restoring))}"
            )
        else:
            self._metrics.readiness.clear(READINESS_CAUSE)
