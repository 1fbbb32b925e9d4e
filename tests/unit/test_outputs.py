import logging
import os

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
