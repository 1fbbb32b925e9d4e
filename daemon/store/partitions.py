"""Requests partitions in cluster mode: which this store owns, the jobs of each, the
forgetting of a partition's rows before a restore replaces them with the changelog's, and
how far the partition's remote commands were applied (docs/cluster-design.md sections 2.1
to 2.5 and 5.1)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.states import PhaseStatus
from daemon.store.base import _marks
from daemon.store.moves import TERMINAL_NAMES, UNFINISHED
from daemon.store.retention import Retention

OWNED = "owned"
RESTORING = "restoring"
DORMANT = "dormant"
# The tables whose rows belong to a job, deleted with the job's partition. The model-call
# records stay: they are diagnostics of the calls this process made.
JOB_TABLES = ("phases", "files", "outbox", "sequences", "jobs")
# The changelog key of a partition's commands offset (``{"offset": N}``: the next offset of
# the partition's commands to apply). Its mark is ``~commands/P``, since a mark's key is
# unique across partitions; the record goes to partition P with the key ``~commands``.
COMMANDS_KEY = "~commands"


def commands_mark(partition: int) -> str:
    """The mark of the partition's ``~commands`` record."""
    return f"{COMMANDS_KEY}/{partition}"


def commands_mark_partition(key: str) -> int | None:
    """The partition whose ``~commands`` record a mark's key names; None for another key."""
    head, slash, number = key.partition("/")
    if head != COMMANDS_KEY or not slash or not number.isdigit():
        return None
    return int(number)


@dataclass(frozen=True)
class PartitionRecord:
    partition: int
    fence: int
    claim_offset: int
    state: str
    commands_offset: int = 0


class Partitions(Retention):
    """The partitions table and the partition-wide reads and writes of jobs."""

    def partition_of_job(self, job_id: str) -> int | None:
        row = self.db.conn.execute(
            'SELECT "partition" FROM jobs WHERE job_id = ?', (job_id,)
        ).fetchone()
        return None if row is None else int(row[0] or 0)

    def local_partitions(self) -> set[int]:
        """The requests partitions this store has jobs of."""
        rows = self.db.conn.execute('SELECT DISTINCT "partition" FROM jobs').fetchall()
        return {int(row[0] or 0) for row in rows}

    def partition_jobs(self, partition: int, unfinished: bool = False) -> list[str]:
        """The jobs of a requests partition, oldest first; only the unfinished ones if asked."""
        query = 'SELECT job_id FROM jobs WHERE "partition" = ?'
        args: tuple[object, ...] = (partition,)
        if unfinished:
            query += f" AND {UNFINISHED}"
            args += TERMINAL_NAMES
        rows = self.db.conn.execute(query + " ORDER BY created_at", args).fetchall()
        return [row[0] for row in rows]

    def running_phases_of(self, partition: int) -> list[tuple[str, str]]:
        """``(job_id, phase)`` of every phase marked running in the partition's jobs."""
        rows = self.db.conn.execute(
            "SELECT p.job_id, p.phase FROM phases p JOIN jobs j ON j.job_id = p.job_id "
            'WHERE p.status = ? AND j."partition" = ?',
            (PhaseStatus.RUNNING.value, partition),
        ).fetchall()
        return [(job_id, phase) for job_id, phase in rows]

    def forget_partition(self, partition: int) -> int:
        """Delete every row of the partition's jobs and its marks, in one transaction: a
        restore puts the changelog's state in their place. Returns how many jobs."""
        with self.transaction():
            jobs = [
                row[0]
                for row in self.db.conn.execute(
                    'SELECT job_id FROM jobs WHERE "partition" = ?', (partition,)
                )
            ]
            for start in range(0, len(jobs), 500):
                batch = jobs[start : start + 500]
                for table in JOB_TABLES:
                    self.db.conn.execute(
                        f"DELETE FROM {table} WHERE job_id IN ({_marks(batch)})", batch
                    )
            self.db.conn.execute('DELETE FROM changelog_marks WHERE "partition" = ?', (partition,))
            # no claim of this store covers rows of it any more
            self.db.conn.execute(
                'UPDATE partitions SET fence = NULL, claim_offset = NULL WHERE "partition" = ?',
                (partition,),
            )
        return len(jobs)

    def seed_partition(self, partition: int) -> int:
        """Mark every key of the partition's jobs: their records go to a changelog that
        never had an owner of the partition (a store from before cluster mode). Returns
        how many jobs."""
        jobs = self.partition_jobs(partition)
        with self.transaction():
            for job_id in jobs:
                self._mark_every_key(job_id)
        return len(jobs)

    def mark_keys(self, partition: int, keys: Iterable[str]) -> None:
        """Mark changelog keys of the partition to be written again (a correction of a
        record that a reader found invalid: section 3.3)."""
        with self.transaction():
            self.db.conn.executemany(
                'INSERT OR REPLACE INTO changelog_marks (key, "partition") VALUES (?, ?)',
                [
                    (commands_mark(partition) if key == COMMANDS_KEY else key, partition)
                    for key in keys
                ],
            )

    def partition_record(self, partition: int) -> PartitionRecord | None:
        row = self.db.conn.execute(
            'SELECT "partition", fence, claim_offset, state, coalesce(commands_offset, 0) '
            'FROM partitions WHERE "partition" = ?',
            (partition,),
        ).fetchone()
        return None if row is None else PartitionRecord(*row)

    def set_partition(
        self,
        partition: int,
        state: str,
        fence: int | None = None,
        claim_offset: int | None = None,
        commands_offset: int | None = None,
    ) -> None:
        """Record the partition's state here (and, when owned, the claim it is owned by and
        the commands offset restored with it)."""
        with self.transaction():
            self.db.conn.execute(
                'INSERT INTO partitions ("partition", fence, claim_offset, state, '
                "commands_offset, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                'ON CONFLICT("partition") DO UPDATE SET '
                "fence = coalesce(excluded.fence, fence), "
                "claim_offset = coalesce(excluded.claim_offset, claim_offset), "
                "commands_offset = coalesce(excluded.commands_offset, commands_offset), "
                "state = excluded.state, updated_at = excluded.updated_at",
                (partition, fence, claim_offset, state, commands_offset, time.time()),
            )

    def commands_offset(self, partition: int) -> int:
        """The next offset of the partition's commands to apply (0: from its beginning)."""
        row = self.db.conn.execute(
            'SELECT commands_offset FROM partitions WHERE "partition" = ?', (partition,)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def advance_commands(self, partition: int, offset: int) -> None:
        """The partition's commands before ``offset`` are applied: call inside the
        transaction of the command's effect, so the changelog gets the new offset (its
        ``~commands`` record, marked here after the effect's keys) with the effect."""
        with self.transaction():
            self.db.conn.execute(
                'INSERT INTO partitions ("partition", state, commands_offset, updated_at) '
                'VALUES (?, ?, ?, ?) ON CONFLICT("partition") DO UPDATE SET '
                "commands_offset = excluded.commands_offset, updated_at = excluded.updated_at",
                (partition, OWNED, offset, time.time()),
            )
            if self.changelog:
                self.db.conn.execute(
                    'INSERT OR REPLACE INTO changelog_marks (key, "partition") VALUES (?, ?)',
                    (commands_mark(partition), partition),
                )

    def owned_partitions(self) -> set[int]:
        rows = self.db.conn.execute(
            'SELECT "partition" FROM partitions WHERE state = ?', (OWNED,)
        ).fetchall()
        return {int(row[0]) for row in rows}

    def forget_ownership(self) -> None:
        """At start: this process owns nothing until the group assigns it partitions."""
        with self.transaction():
            self.db.conn.execute(
                "UPDATE partitions SET state = ?, updated_at = ? WHERE state != ?",
                (DORMANT, time.time(), DORMANT),
            )
