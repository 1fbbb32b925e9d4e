import asyncio
import logging
import os
import time

import pytest

from daemon.contract import FileRecord
from daemon.errors import ReplayMissing
from daemon.llm import LLMAnswer, LLMCall, RecordingProvider, ReplayProvider
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


def write(tmp_path, job_id, records):
    writer = OutputWriter(tmp_path / "out")
    try:
        writer.write_now(job_id, records)
    finally:
        writer.close()


def test_a_symlinked_job_folder_is_not_followed(tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out/job-1")
    with caplog.at_level(logging.ERROR, logger="daemon.outputs"):
        write(tmp_path, "job-1", [record("a.py", "x"), record("b/c.py", "y")])
    assert list(outside.iterdir()) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("symlink" in m for m in messages)


def test_a_directory_swapped_for_a_symlink_between_writes_is_not_followed(tmp_path, caplog):
    """The first write checked out/job-1/a; the next write must check it again."""
    outside = tmp_path / "outside"
    outside.mkdir()
    write(tmp_path, "job-1", [record("a/one.py", "1")])
    writer = OutputWriter(tmp_path / "out")
    try:
        writer.write_now("job-1", [record("a/two.py", "2")])
        os.rename(tmp_path / "out/job-1/a", tmp_path / "aside")
        os.symlink(outside, tmp_path / "out/job-1/a")
        with caplog.at_level(logging.ERROR, logger="daemon.outputs"):
            writer.write_now("job-1", [record("a/three.py", "3")])
    finally:
        writer.close()
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "aside").iterdir()) == ["one.py", "two.py"]
    [message] = [r.getMessage() for r in caplog.records]
    assert "a/three.py not written" in message and "symlink" in message


def test_a_hard_link_in_the_output_tree_is_not_written_through(tmp_path):
    other = tmp_path / "elsewhere.txt"
    other.write_text("keep")
    (tmp_path / "out/job-1").mkdir(parents=True)
    os.link(other, tmp_path / "out/job-1/a.py")
    write(tmp_path, "job-1", [record("a.py", "new")])
    assert other.read_text() == "keep"
    assert (tmp_path / "out/job-1/a.py").read_text() == "new"


def test_a_symlink_at_a_file_in_the_output_tree_is_replaced(tmp_path):
    other = tmp_path / "elsewhere.txt"
    other.write_text("keep")
    (tmp_path / "out/job-1").mkdir(parents=True)
    os.symlink(other, tmp_path / "out/job-1/a.py")
    write(tmp_path, "job-1", [record("a.py", "new")])
    assert other.read_text() == "keep"
    assert not (tmp_path / "out/job-1/a.py").is_symlink()
    assert (tmp_path / "out/job-1/a.py").read_text() == "new"


@pytest.mark.parametrize("job_id", [".", "..", "...", "nul", ""])
def test_job_ids_that_are_not_a_folder_name_get_a_folder_of_their_own(tmp_path, job_id):
    write(tmp_path, job_id, [record("a.py", "x")])
    [folder] = (tmp_path / "out").iterdir()
    assert folder.name == output_folder(job_id) and folder.name.startswith("job-")
    assert (folder / "a.py").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing beside out/


def test_content_that_cannot_be_encoded_is_logged_and_the_rest_written(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="daemon.outputs"):
        write(tmp_path, "job-1", [record("bad.py", "x\ud800"), record("ok.py", "y")])
    assert (tmp_path / "out/job-1/ok.py").read_text() == "y"
    assert not (tmp_path / "out/job-1/bad.py").exists()
    [message] = [r.getMessage() for r in caplog.records]
    assert "bad.py not written" in message


async def test_an_output_dir_that_cannot_be_made_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / "out").write_text("a file, not a folder")
    writer = OutputWriter(tmp_path / "out")
    try:
        with caplog.at_level(logging.ERROR, logger="daemon.outputs"):
            writer.submit("job-1", [record("a.py", "x"), record("b.py", "y")])
            await writer.written()
    finally:
        writer.close()
    [message] = [r.getMessage() for r in caplog.records]
    assert "2 files not written" in message


class Answers:
    """The LLM provider interface, answering every call with an empty file list."""

    async def complete(self, call, on_text):
        on_text('{"files": []}')
        return LLMAnswer(text='{"files": []}', stop_reason="end_turn")

    async def aclose(self):
        return None


def call_of(job_id: str) -> LLMCall:
    return LLMCall(job_id, "ARCH", 1, "claude-x", 100, [], [], {}, 10.0)


@pytest.mark.parametrize("job_id", [".", "..", "...", "job-1", "codegen.requests:0:5"])
async def test_recorded_answers_stay_in_the_cassette_and_replay(tmp_path, job_id):
    """Request ids "." and ".." are valid: the cassette names their folders as output.dir
    does, and the replay looks them up the same way."""
    cassette = tmp_path / "box" / "cassette"
    recorder = RecordingProvider(Answers(), cassette)
    await recorder.complete(call_of(job_id), lambda chunk: None)
    written = [p for p in (tmp_path / "box").rglob("*") if p.is_file()]
    assert sorted(p.relative_to(cassette).as_posix() for p in written) == [
        "cassette.json",
        f"{output_folder(job_id)}/ARCH.01.json",
    ]
    assert output_folder(job_id) not in (".", "..")
    replayed = await ReplayProvider(cassette).complete(call_of(job_id), lambda chunk: None)
    assert replayed.text == '{"files": []}'
    with pytest.raises(ReplayMissing):
        await ReplayProvider(cassette).complete(call_of("other"), lambda chunk: None)
