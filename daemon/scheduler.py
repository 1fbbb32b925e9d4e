"""The scheduler keeps ``jobs.max_concurrent`` jobs in flight, oldest first: jobs waiting
their turn stay rows in SQLite, not coroutines holding prompts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection

from daemon.errors import StoreFull
from daemon.jobs import JobRunner
from daemon.metrics import Readiness
from daemon.settings import JobsSettings
from daemon.states import JobState
from daemon.store import Store

log = logging.getLogger(__name__)
SCHEDULER_POLL_S = 1.0
STORE_FULL_RETRY_S = 5.0


class Scheduler:
    """Keeps up to ``max_concurrent`` jobs running, oldest first; the rest wait in the store."""

    def __init__(
        self,
        store: Store,
        runner: JobRunner,
        jobs: JobsSettings | None = None,
        readiness: Readiness | None = None,
        partitions: Callable[[], Collection[int] | None] = lambda: None,
    ) -> None:
        self._partitions = partitions  # the requests partitions whose jobs run here; None: all
        self._store = store
        self._runner = runner
        self._max = (jobs or JobsSettings()).max_concurrent
        self._tasks: dict[str, asyncio.Task[JobState]] = {}
        self._broken: set[str] = set()
        self._cooling: dict[str, float] = {}  # jobs stopped by a full disk: when to retry
        self._readiness = readiness or Readiness()
        self._wake = asyncio.Event()
        self._accepting = True

    @property
    def running(self) -> list[str]:
        return list(self._tasks)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while self._accepting:
            self._fill()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SCHEDULER_POLL_S)

    def _fill(self) -> None:
        free = self._max - len(self._tasks)
        if free <= 0:
            return
        now = time.monotonic()
        cooling = [job_id for job_id, until in self._cooling.items() if until > now]
        exclude = [*self._tasks, *self._broken, *cooling]
        runnable = self._store.runnable_jobs(
            exclude=exclude, limit=free, partitions=self._partitions()
        )
        for job_id in runnable:
            task = asyncio.create_task(self._runner.run(job_id), name=f"job:{job_id}")
            self._tasks[job_id] = task
            task.add_done_callback(functools.partial(self._finished, job_id))

    def _finished(self, job_id: str, task: asyncio.Task[JobState]) -> None:
        self._tasks.pop(job_id, None)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, StoreFull):
            # Nothing was written; the job runs again once the disk has room.
            self._cooling[job_id] = time.monotonic() + STORE_FULL_RETRY_S
            self._readiness.set("disk:jobs", f"store: {error}; jobs wait")
            log.warning(
                "%s; job tried again in %.0f s", error, STORE_FULL_RETRY_S, extra={"job_id": job_id}
            )
        elif error is not None:
            self._end_broken(job_id, error)
        elif self._cooling.pop(job_id, None) is not None or not self._cooling:
            self._readiness.clear("disk:jobs")
        self.wake()

    def _end_broken(self, job_id: str, error: BaseException) -> None:
        """A job whose runner failed outside any phase ends failed, announced; it is not
        run again in this process, so a job that breaks the runner cannot loop."""
        self._broken.add(job_id)
        log.error("job stopped by an internal error", exc_info=error, extra={"job_id": job_id})
        try:
            self._store.end_job(job_id)
        except Exception:
            log.exception("the failed job could not be ended", extra={"job_id": job_id})

    def stop_jobs(self, partitions: Collection[int]) -> list[asyncio.Task[JobState]]:
        """Cancel the running jobs of the requests partitions (another daemon owns them
        now): their phases are interrupted, not failed. Returns their tasks."""
        stopped = {
            job_id: task
            for job_id, task in self._tasks.items()
            if self._store.partition_of_job(job_id) in partitions
        }
        for task in stopped.values():
            task.cancel()
        if stopped:
            log.info("stopped %d jobs of partitions %s", len(stopped), sorted(partitions))
        return list(stopped.values())

    async def drain(self, grace_s: float) -> None:
        """Stop starting jobs; give running phases ``grace_s`` to finish, then cancel them.
        A cancelled phase stays checkpointed as running and resumes at the next start."""
        self._accepting = False
        self._runner.stop_after_phase()
        self.wake()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
