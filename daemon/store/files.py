"""The files of a job: committed the moment they are complete, read as the manifest a
phase builds on, as the project the checks read, and for export."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from daemon.contract import FileRecord
from daemon.records import NewFile
from daemon.states import PHASE_NAMES, ArchPlan
from daemon.store.base import _marks
from daemon.store.events import Events

UPSERT_FILE = (
    "INSERT INTO files (job_id, path, phase, content, sha256, size, committed_at) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(job_id, path) DO UPDATE SET phase = excluded.phase, "
    "content = excluded.content, sha256 = excluded.sha256, size = excluded.size"
)


class Files(Events):
    """Writing and reading a job's files."""

    def stage_files(self, job_id: str, phase: str, files: Sequence[NewFile]) -> None:
        """Commit files of a running phase the moment they are complete."""
        with self.transaction():
            self._upsert_files(job_id, phase, [new.record() for new in files])

    def stage_plan(self, job_id: str, plan: ArchPlan) -> None:
        """Commit ARCH's plan as far as it goes, so a restart continues it rather than
        paying for it again (ARCH's commit writes the whole plan)."""
        with self.transaction():
            self._set_plan(job_id, plan)

    def _upsert_files(self, job_id: str, phase: str, records: Sequence[FileRecord]) -> None:
        self.db.conn.executemany(UPSERT_FILE, [self._file_row(job_id, phase, r) for r in records])
        self._mark(job_id, *(f"file/{r.path}" for r in records))

    def _set_plan(self, job_id: str, plan: ArchPlan) -> None:
        self.db.conn.execute(
            "UPDATE jobs SET plan = ? WHERE job_id = ?", (plan.model_dump_json(), job_id)
        )
        self._mark(job_id, "plan")

    @staticmethod
    def _file_row(job_id: str, phase: str, record: FileRecord) -> tuple[object, ...]:
        return (job_id, record.path, phase, record.content, record.sha256, record.size, time.time())

    def files_of_phases(self, job_id: str, phases: Iterable[str]) -> list[FileRecord]:
        """What the given phases produced (the manifest a phase builds on), in phase order."""
        names = list(phases)
        if not names:
            return []
        rows = self.db.conn.execute(
            "SELECT path, sha256, size, content, phase FROM files WHERE job_id = ? "
            f"AND phase IN ({_marks(names)}) ORDER BY rowid",
            (job_id, *names),
        ).fetchall()
        order = {name: index for index, name in enumerate(PHASE_NAMES)}
        rows.sort(key=lambda r: order[r[4]])
        return [FileRecord(path=r[0], sha256=r[1], size=r[2], content=r[3]) for r in rows]

    def count_files(self, job_id: str, phases: Iterable[str] | None = None) -> int:
        query, args = "SELECT count(*) FROM files WHERE job_id = ?", [job_id]
        if phases is not None:
            names = list(phases)
            query += f" AND phase IN ({_marks(names)})"
            args += names
        return int(self.db.conn.execute(query, args).fetchone()[0])

    def files(self, job_id: str, phase: str | None = None) -> list[FileRecord]:
        query = "SELECT path, sha256, size, content FROM files WHERE job_id = ?"
        args: tuple[str, ...] = (job_id,)
        if phase is not None:
            query += " AND phase = ?"
            args = (job_id, phase)
        rows = self.db.conn.execute(query + " ORDER BY rowid", args).fetchall()
        return [FileRecord(path=r[0], sha256=r[1], size=r[2], content=r[3]) for r in rows]

    def file_phases(self, job_id: str) -> dict[str, str]:
        """Every file of the job, path to the phase that last wrote it."""
        rows = self.db.conn.execute(
            "SELECT path, phase FROM files WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return dict(rows)

    def file_contents(self, job_id: str) -> dict[str, str]:
        """Every file of the job, path to content (for the code checks)."""
        rows = self.db.conn.execute(
            "SELECT path, content FROM files WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return dict(rows)
