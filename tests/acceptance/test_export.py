"""``codegend export JOB DIR`` in a subprocess, as a user runs it, on a store holding one
job's files: a new DIR, a non-empty one, links planted in it, and a DIR that cannot be
made."""

from __future__ import annotations

import os
import subprocess

import pytest

from daemon.contract import GenerationRequest
from daemon.records import NewFile
from daemon.states import PHASE_NAMES
from daemon.store import Store
from tests.support.processes import CODEGEND, ROOT

FILES = {
    "README.md": "# shop\n",
    "backend/app/main.py": "app = 1\n",
    "frontend/src/App.tsx": "export default 1\n",
}


@pytest.fixture
def variables(tmp_path):
    store = Store(tmp_path / "codegend.db")
    try:
        request = GenerationRequest.model_validate(
            {"project_name": "shop", "mockup": {"kind": "text", "description": "A shop"}}
        )
        store.create_job("shop-1", request, "test", list(PHASE_NAMES))
        store.stage_files("shop-1", "CONFIG", [NewFile(p, c) for p, c in FILES.items()])
    finally:
        store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEGEND_", "ANTHROPIC_"))}
    return {**env, "CODEGEND_STORE__PATH": str(tmp_path / "codegend.db"), "PYTHONPATH": str(ROOT)}


def export(variables, *args):
    return subprocess.run(
        [*CODEGEND, "export", *args],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result, code, *words):
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all(word in result.stderr for word in words), result.stderr


def exported(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_text()
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_a_job_is_exported_to_a_new_folder(variables, tmp_path):
    result = export(variables, "shop-1", str(tmp_path / "new/dir"))
    assert result.returncode == 0, result.stderr
    assert "3 files written" in result.stdout
    assert exported(tmp_path / "new/dir") == FILES


def test_a_folder_that_is_not_empty_is_refused_without_force(variables, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    one_line_error(export(variables, "shop-1", str(target)), 2, "not empty", "--force")
    assert exported(target) == {"mine.txt": "keep"}
    result = export(variables, "shop-1", str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert exported(target) == {**FILES, "mine.txt": "keep"}


def test_links_in_the_folder_are_replaced_not_written_through(variables, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.md").write_text("keep")
    (outside / "hard.py").write_text("keep")
    target = tmp_path / "target"
    (target / "backend/app").mkdir(parents=True)
    os.symlink(outside / "victim.md", target / "README.md")
    os.link(outside / "hard.py", target / "backend/app/main.py")
    result = export(variables, "shop-1", str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert exported(target) == FILES
    assert not (target / "README.md").is_symlink()
    assert exported(outside) == {"victim.md": "keep", "hard.py": "keep"}


def test_a_symlinked_folder_is_not_followed(variables, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "frontend")
    result = export(variables, "shop-1", str(target), "--force")
    one_line_error(result, 1, "'frontend' is a symlink", "files written")
    assert list(outside.iterdir()) == []


def test_a_folder_that_cannot_be_made_is_one_line_and_exit_1(variables, tmp_path):
    (tmp_path / "plain-file").write_text("x")
    result = export(variables, "shop-1", str(tmp_path / "plain-file/sub"))
    one_line_error(result, 1, "cannot write", "0 of 3 files written")


def test_an_unknown_job_is_one_line_and_exit_1(variables, tmp_path):
    one_line_error(export(variables, "nope", str(tmp_path / "x")), 1)
    assert not (tmp_path / "x").exists()
