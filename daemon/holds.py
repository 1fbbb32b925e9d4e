"""What intake waits for, and for how long: a backoff that doubles while tries fail, and
the hold of a full disk, which says why on ``/readyz`` until the store takes a write."""

from __future__ import annotations

import logging
import time

from daemon.errors import StoreFull
from daemon.metrics import Metrics

log = logging.getLogger("daemon.intake")
RETRY_FIRST_S = 1.0  # after a full disk or a dead letter not sent; doubling
RETRY_MAX_S = 30.0


class Backoff:
    """Something intake waits for: the next try after a backoff that doubles (1 s up to
    30 s) while tries fail."""

    def __init__(self) -> None:
        self._backoff_s = 0.0  # 0: not waiting
        self._retry_at = 0.0

    def next_try(self) -> float:
        """Another failure: the seconds until the next try."""
        self._backoff_s = min(self._backoff_s * 2, RETRY_MAX_S) or RETRY_FIRST_S
        self._retry_at = time.monotonic() + self._backoff_s
        return self._backoff_s

    def held(self) -> bool:
        return bool(self._backoff_s) and time.monotonic() < self._retry_at

    def due(self) -> bool:
        """Waiting, and the time for the next try has come."""
        return bool(self._backoff_s) and not self.held()

    def clear(self) -> bool:
        """Done waiting; whether it was."""
        waiting, self._backoff_s = bool(self._backoff_s), 0.0
        return waiting


class DiskHold(Backoff):
    """Intake held back by a full disk, the reason on /readyz until a write succeeds."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def hold(self, exc: StoreFull) -> None:
        backoff_s = self.next_try()
        reason = f"store: disk full, intake paused (next try in {backoff_s:.0f} s)"
        self._metrics.readiness.set("disk", reason)
        log.error("%s: intake paused, next try in %.0f s", exc, backoff_s)

    def writable(self) -> None:
        if self.clear():
            self._metrics.readiness.clear("disk")
            log.info("the store takes writes again: intake resumed")
