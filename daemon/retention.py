"""Retention: the store only grows unless finished jobs and published events are deleted.

The daemon runs a `Pruner` (every ``PRUNE_INTERVAL_S``); ``codegend prune`` does one pass by
hand. Each pass deletes in small transactions (``JOBS_PER_TRANSACTION`` jobs, then
``EVENTS_PER_TRANSACTION`` events) and yields to the event loop between them, so it never
holds the store or the loop for long.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time

from daemon.errors import CodegendError, ConfigError
from daemon.store import Pruned, Store

log = logging.getLogger(__name__)
PRUNE_INTERVAL_S = 3600.0
FIRST_PRUNE_AFTER_S = 5.0  # the first pass, once start-up is done
RETRY_AFTER_S = 60.0  # a pass that failed (the store busy, the disk full) is tried again
JOBS_PER_TRANSACTION = 1  # a finished job of 88 files (half a MB): about 6 ms at the median
EVENTS_PER_TRANSACTION = 100  # up to a few MB of payloads
SECONDS_PER_DAY = 86_400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": SECONDS_PER_DAY, "w": 7 * SECONDS_PER_DAY}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a bare number is days)."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration; give e.g. 30d, 12h, 90m, 45s or 2w")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "d"]


def prune_step(store: Store, before: float) -> Pruned:
    """One small transaction of jobs, one of events; nothing left when it returns zeros."""
    jobs = store.prune_jobs(before, JOBS_PER_TRANSACTION)
    return jobs + Pruned(events=store.prune_events(before, EVENTS_PER_TRANSACTION))


def prune(store: Store, before: float) -> Pruned:
    """Everything prunable before ``before``, in small transactions (for the CLI)."""
    total = Pruned()
    while (step := prune_step(store, before)) != Pruned():
        total += step
    return total


class Pruner:
    """The daemon's periodic pass; never returns while the daemon runs (a side task that
    ends would stop the daemon), never raises for a store that cannot be pruned now."""

    def __init__(self, store: Store, retention_days: float) -> None:
        self._store = store
        self._retention_s = retention_days * SECONDS_PER_DAY

    async def run(self) -> None:
        await asyncio.sleep(FIRST_PRUNE_AFTER_S)
        while True:
            try:
                await self.prune_once()
            except (sqlite3.Error, CodegendError) as exc:
                log.warning("pruning the store failed (%s); trying again later", exc)
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def prune_once(self) -> Pruned:
        before = time.time() - self._retention_s
        started = time.monotonic()
        total = Pruned()
        while (step := prune_step(self._store, before)) != Pruned():
            total += step
            await asyncio.sleep(0)  # the loop serves others between two transactions
        if total != Pruned():
            log.info(
                "retention: deleted %d finished jobs and %d published events older than "
                "%g days in %.2f s",
                total.jobs,
                total.events,
                self._retention_s / SECONDS_PER_DAY,
                time.monotonic() - started,
            )
        return total
