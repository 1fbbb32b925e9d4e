"""The progress file: where running phases are, as a killed process leaves it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from daemon.progress import (
    ANSWERED,
    STREAMING,
    WAITING,
    NoProgress,
    Point,
    ProgressFile,
    job_key,
    open_progress,
)


def test_points_survive_the_process_and_released_slots_are_reused(tmp_path):
    store = tmp_path / "s.db"
    first = ProgressFile(store)
    a = first.enter("job-a", "ARCH")
    b = first.enter("job-b", "DB")
    a.mark(Point(2, chars=1234))
    b.mark(Point(1, ANSWERED, 99))
    b.close()  # DB finished: its slot is blank and taken by the next phase
    c = first.enter("job-c", "BE_CORE")
    c.mark(Point(3, chars=7))
    first.close()
    second = ProgressFile(store)
    assert second.previous == {
        (job_key("job-a"), "ARCH"): Point(2, chars=1234),
        (job_key("job-c"), "BE_CORE"): Point(3, chars=7),
    }
    second.close()
    assert ProgressFile(store).previous == {}  # each start begins afresh


def test_a_sigkilled_process_leaves_its_last_point(tmp_path):
    store = tmp_path / "s.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from daemon.progress import Point, ProgressFile
        slot = ProgressFile(Path({str(store)!r})).enter("job-x", "FE_PAGES")
        for chars in range(0, 50_000, 40):
            slot.mark(Point(4, chars=chars))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), check=False)
    assert done.returncode == -signal.SIGKILL
    assert ProgressFile(store).previous == {(job_key("job-x"), "FE_PAGES"): Point(4, chars=49_960)}


def test_one_process_at_a_time_holds_the_file(tmp_path):
    held = ProgressFile(tmp_path / "s.db")
    with pytest.raises(OSError):
        ProgressFile(tmp_path / "s.db")
    assert isinstance(open_progress(tmp_path / "s.db"), NoProgress)
    held.close()


def test_points_near_each_other():
    assert Point(1, chars=100).near(Point(1, chars=200))
    assert not Point(1, chars=100).near(Point(1, chars=400))
    assert not Point(1, chars=100).near(Point(2, chars=100))
    assert not Point(1, ANSWERED, 100).near(Point(1, chars=100))
    assert Point().describe() == "before its first call"
    assert Point(2, ANSWERED, 10).describe() == "in call 2, after its answer"
    assert Point(2, STREAMING, 10).describe() == "in call 2, at character 10 of the answer"
    assert not Point(1, WAITING).evidence and Point(1, STREAMING, 5).evidence


def test_a_progress_file_that_cannot_be_written_fails_nothing(tmp_path):
    progress = ProgressFile(tmp_path / "s.db")
    os.close(progress._fd)  # as a full disk would, every write fails from now on
    progress._fd = os.open(os.devnull, os.O_RDONLY)
    slot = progress.enter("job-a", "ARCH")
    slot.mark(Point(1, STREAMING, 10))
    slot.close()
    progress.close()
