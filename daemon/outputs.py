"""The copy of each job's files in ``output.dir``, written on a thread of its own.

Creating files is the kernel's slowest work in a phase: a new inode costs a quarter of a
millisecond on some virtual disks, more on network volumes, and the event loop must not
wait for it. Writes run in the order they were submitted; :meth:`OutputWriter.written`
waits for all of them so far. The outbox relay calls it before it publishes, so a
``phase.completed`` event never leaves before the phase's files are in ``output.dir``;
should the process die in between, the event is still unpublished at the next start and
``JobRunner.restore_outputs`` writes the files again from the store.

The store and the events hold every file; a file that cannot be written here (a full
disk, a symlink planted in the output tree) is logged and skipped, and ``codegend export``
writes it later. Files are written through directory descriptors (:class:`daemon.paths.Tree`):
a symlink below ``output.dir``, the job's folder included, is never followed, and a hard
link at a file's place is replaced, not written through.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon.contract import FileRecord
from daemon.errors import UnsafePath
from daemon.paths import Tree, folder_name

log = logging.getLogger(__name__)


def output_folder(job_id: str) -> str:
    """The job's folder name under output.dir; ids that are not one safe name (``.``,
    ``..``, ``nul``) are hashed."""
    return folder_name(job_id)


class OutputWriter:
    def __init__(self, output_dir: Path) -> None:
        self._output_dir = output_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codegend-output")
        self._queue: deque[tuple[str, Sequence[FileRecord]]] = deque()
        self._batch: asyncio.Future[None] | None = None  # the thread's current run

    def submit(self, job_id: str, records: Sequence[FileRecord]) -> None:
        """Queue the files of ``job_id`` for writing; returns at once. What is queued
        while the thread writes goes in its next run, so a busy daemon hands over many
        phases at a time."""
        if records:
            self._queue.append((job_id, records))
            if self._batch is None:
                self._start_batch()

    async def written(self) -> None:
        """Wait until every file submitted so far is written (or its failure logged)."""
        while (batch := self._batch) is not None:
            await asyncio.shield(batch)
            if self._batch is batch:  # done, but its callback has not run yet: let it
                await asyncio.sleep(0)

    def _start_batch(self) -> None:
        loop = asyncio.get_running_loop()
        self._batch = loop.run_in_executor(self._executor, self._drain)
        self._batch.add_done_callback(self._batch_done)

    def _batch_done(self, _: object) -> None:
        # On the loop's thread, like submit: work queued after the thread found the queue
        # empty is picked up here.
        self._batch = None
        if self._queue:
            self._start_batch()

    def _drain(self) -> None:
        while self._queue:
            self._write(*self._queue.popleft())

    def write_now(self, job_id: str, records: Sequence[FileRecord]) -> None:
        """Write on the calling thread (at start, before any submit)."""
        self._write(job_id, records)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _write(self, job_id: str, records: Sequence[FileRecord]) -> None:
        folder = output_folder(job_id)
        try:
            tree = Tree(self._output_dir, folder)
        except OSError as exc:
            self._not_written(job_id, f"{len(records)} files", self._output_dir / folder, exc)
            return
        with tree:
            for record in records:
                try:
                    tree.write(record.path, record.content)
                except (OSError, UnsafePath, UnicodeError) as exc:
                    self._not_written(job_id, record.path, tree.path, exc)

    @staticmethod
    def _not_written(job_id: str, what: str, where: Path, exc: Exception) -> None:
        log.error(
            "%s not written to %s: %s (the store has it: codegend export)",
            what,
            where,
            exc,
            extra={"job_id": job_id},
        )
