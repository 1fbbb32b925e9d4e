"""The store: SQLite through sqlite-utils, in WAL mode. The only module that knows the schema.

Every state change of a job and the events announcing it are written in one
transaction (the transactional outbox): there is no moment where one exists without
the other. One connection, used from the event loop's thread; each write is a short
transaction, so no call blocks the loop for long.

Commits are group commits: each transaction is in the write-ahead log when it returns,
so it survives a killed process, and :meth:`Store.sync` makes everything committed so far
survive power loss too, with one fsync. The daemon syncs before anything leaves the
process: before the relay publishes events and before intake commits Kafka offsets.
"""

from __future__ import annotations

from daemon.store.base import BUSY_TIMEOUT_MS, disk_full
from daemon.store.events import OutboxRow
from daemon.store.jobs import Jobs
from daemon.store.partitions import PartitionRecord, Partitions
from daemon.store.phases import Death, PhaseRecord, Phases
from daemon.store.replica import Replica
from daemon.store.retention import Pruned, Retention
from daemon.store.schema import SCHEMA_VERSION


class Store(Jobs, Phases, Partitions, Retention, Replica):
    """All reads and writes of codegend's SQLite file, over one connection: the layers
    beneath (connection, events, files, states and their moves) are shared by jobs,
    phases, retention and the changelog's replica, so a phase's commit is one transaction."""


__all__ = [
    "BUSY_TIMEOUT_MS",
    "SCHEMA_VERSION",
    "Death",
    "OutboxRow",
    "PartitionRecord",
    "PhaseRecord",
    "Pruned",
    "Store",
    "disk_full",
]
