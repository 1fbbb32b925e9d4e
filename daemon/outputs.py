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
writes it later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon.errors import UnsafePath
from daemon.models import FileRecord
from daemon.paths import check_path, write_file

log = logging.getLogger(__name__)
MAX_CHECKED_DIRS = 10_000


def output_folder(job_id: str) -> str:
    """The job's folder name under output.dir; ids that are not a safe name are hashed."""
    try:
        check_path(job_id)
    except UnsafePath:
        return "job-" + hashlib.sha256(job_id.encode()).hexdigest()[:16]
    return job_id.replace("/", "_")


class OutputWriter:
    def __init__(self, output_dir: Path) -> None:
        self._output_dir = output_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codegend-output")
        self._last: asyncio.Future[None] | None = None
        # Directories made and found not to be symlinks; touched by the writer thread only.
        self._checked: set[Path] = set()

    def submit(self, job_id: str, records: Sequence[FileRecord]) -> None:
        """Queue the files of ``job_id`` for writing; returns at once."""
        if records:
            loop = asyncio.get_running_loop()
            self._last = loop.run_in_executor(self._executor, self._write, job_id, records)

    async def written(self) -> None:
        """Wait until every file submitted so far is written (or its failure logged)."""
        if self._last is not None and not self._last.done():
            await asyncio.shield(self._last)

    def write_now(self, job_id: str, records: Sequence[FileRecord]) -> None:
        """Write on the calling thread (at start, before any submit)."""
        self._write(job_id, records)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _write(self, job_id: str, records: Sequence[FileRecord]) -> None:
        if len(self._checked) > MAX_CHECKED_DIRS:
            self._checked.clear()
        root = self._output_dir / output_folder(job_id)
        for record in records:
            try:
                write_file(root, record.path, record.content, self._checked)
            except (OSError, UnsafePath) as exc:
                log.error(
                    "%s not written to %s: %s (the store has it: codegend export)",
                    record.path,
                    root,
                    exc,
                    extra={"job_id": job_id},
                )
