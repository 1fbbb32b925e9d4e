import os

import pytest

from daemon.errors import UnsafePath
from daemon.paths import MAX_PATH_CHARS, check_path, write_file

UNSAFE = [
    "",
    "   ",
    "/etc/passwd",
    "../secret",
    "a/../../b",
    "a/..",
    "..",
    "a\x00b",
    "a\\b",
    "C:/x",
    "c:x",
    "~/x",
    "~root",
    ".git/config",
    "src/.git/hooks/pre-commit",
    ".GIT/HEAD",
    "a//b",
    "./a",
    "a/./b",
    "a/",
    "x" * (MAX_PATH_CHARS + 1),
    "a/" + "y" * 101,
    "a\nb",
]


@pytest.mark.parametrize("path", UNSAFE)
def test_unsafe_paths_are_rejected(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "backend/app/main.py",
        "frontend/src/App.tsx",
        ".env.example",
        ".github/workflows/ci.yml",
        "README.md",
        "a.b/c-d_e.txt",
        ".gitignore",
    ],
)
def test_safe_paths_pass(path):
    assert check_path(path) == path


def test_write_file_refuses_symlinked_directories(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePath):
        write_file(root, "link/evil.txt", "x")
    assert not (outside / "evil.txt").exists()


def test_write_file_refuses_symlinked_file(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    os.symlink(target, tmp_path / "f.txt")
    with pytest.raises(OSError):
        write_file(tmp_path, "f.txt", "overwrite")
    assert target.read_text() == "keep"


def test_write_file_creates_directories(tmp_path):
    written = write_file(tmp_path / "job", "a/b/c.py", "x = 1\n")
    assert written.read_text() == "x = 1\n"


def test_write_file_checks_each_directory_once(tmp_path):
    checked: set = set()
    write_file(tmp_path / "job", "a/b/one.py", "1\n", checked)
    assert checked == {tmp_path / "job", tmp_path / "job/a", tmp_path / "job/a/b"}
    write_file(tmp_path / "job", "a/b/two.py", "2\n", checked)
    assert (tmp_path / "job/a/b/two.py").read_text() == "2\n"


def test_write_file_refuses_a_symlink_in_a_new_directory_even_with_a_cache(tmp_path):
    root, outside = tmp_path / "job", tmp_path / "outside"
    outside.mkdir()
    checked: set = set()
    write_file(root, "a/one.py", "1\n", checked)
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePath):
        write_file(root, "link/evil.py", "x", checked)
    assert not (outside / "evil.py").exists()
