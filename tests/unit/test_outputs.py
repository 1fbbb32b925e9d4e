import asyncio
import logging
import os
import time

import pytest

from daemon.models import FileRecord
from daemon.outputs import OutputWriter, output_folder


def record(path: str, content: str) -> FileRecord:
    return FileRecord(path=path, sha256="0" * 64, size=len(content), content=content)


async def test_files_are_written_in_order_off_the_loop(tmp_path):
    writer = OutputWriter(tmp_path)
    try:
        writer.submit("job-1", [record("a/b.py", "one\n"), record("a/c.py", "x\n")])
        writer.submit("job-1", [record("a/b.py", "two\n")])  # a later version wins
        writer.submit("job/2", [record("README.md", "# r\n")])
        await writer.written()
        assert (tmp_path / "job-1/a/b.py").read_text() == "two\n"
        assert (tmp_path / "job-1/a/c.py").read_text() == "x\n"
        assert (tmp_path / output_folder("job/2") / "README.md").read_text() == "# r\n"
    finally:
        writer.close()


async def test_a_file_that_cannot_be_written_is_logged_and_the_rest_written(tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out/job-1").mkdir(parents=True)
    os.symlink(outside, tmp_path / "out/job-1/link")
    writer = OutputWriter(tmp_path / "out")
    try:
        with caplog.at_level(logging.ERROR, logger="daemon.outputs"):
            writer.submit("job-1", [record("link/evil.py", "x"), record("ok.py", "y")])
            await writer.written()
    finally:
        writer.close()
    assert not (outside / "evil.py").exists()
    assert (tmp_path / "out/job-1/ok.py").read_text() == "y"
    [message] = [r.getMessage() for r in caplog.records]
    assert "link/evil.py not written" in message and "codegend export" in message


async def test_written_returns_at_once_with_nothing_submitted(tmp_path):
    writer = OutputWriter(tmp_path)
    await writer.written()
    writer.submit("job-1", [])
    await writer.written()
    writer.close()
    assert list(tmp_path.iterdir()) == []


async def test_written_waits_for_what_was_queued_while_the_thread_wrote(tmp_path):
    writer = OutputWriter(tmp_path)
    try:
        for n in range(50):
            writer.submit(f"job-{n}", [record("a.py", str(n))])
            if n % 7 == 0:
                await writer.written()
        await writer.written()
        assert [(tmp_path / f"job-{n}/a.py").read_text() for n in range(50)] == [
            str(n) for n in range(50)
        ]
    finally:
        writer.close()


@pytest.mark.timeout(10)
async def test_written_returns_when_the_run_ended_just_before(tmp_path):
    """The thread's run is over and its future done, but the loop has not yet run the
    future's callbacks when ``written`` is called."""
    writer = OutputWriter(tmp_path)
    try:
        writer.submit("job-1", [record("a.py", "1")])
        time.sleep(0.3)  # the thread finishes; the loop hears of it at its next turn
        await asyncio.sleep(0)  # that turn marks the future done, its callbacks come next
        await writer.written()
        assert (tmp_path / "job-1/a.py").read_text() == "1"
    finally:
        writer.close()
