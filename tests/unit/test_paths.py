import os

import pytest

from daemon.errors import UnsafePath
from daemon.paths import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_CHARS,
    PathIndex,
    Tree,
    check_path,
    folder_name,
    path_conflict,
    write_file,
)

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
    # each component at most 255 bytes of UTF-8 (4-byte characters: 64 of them is 256)
    "a/" + "\U0001f600" * 64,
    # invisible and control characters: bidi overrides, zero-width, C1, BOM, separators
    "src/\u202egnp.js",
    "a\u200bb.py",
    "a\u200cb.py",
    "a\u200db.py",
    "a\u2060b.py",
    "\ufeffmain.py",
    "a\u2066b\u2069.py",
    "a\u061cb.py",
    "a\x85b",
    "a\x9fb",
    "a\x7fb",
    "a\u2028b",
    "a\ue000b",  # private use
    "a\U000e0001b",  # a tag character (Cf)
    "a\u0378b",  # unassigned
    "a\ud800b",  # a lone surrogate
    "a/\udfffb",
    # names Windows takes for devices, with or without an extension, in any case
    "CON",
    "con.txt",
    "src/nul.txt",
    "Aux.ts",
    "prn",
    "lpt1.log",
    "COM9",
    "com\u00b9.js",
    "nul .txt",
    "conin$",
    # trailing dots or spaces (Windows drops them)
    "a./b",
    "a.",
    "README ",
    "dir /x",
    "...",
    # .git under another spelling
    "GIT~1/config",
    ".Git/config",
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
        "src/pages/[id].tsx",
        "console.log",
        "comx/a.py",
        "com10.txt",
        "auxiliary.ts",
        "docs/caf\u00e9.md",
        "\u65e5\u672c/\u30d5\u30a1\u30a4\u30eb.txt",
        "a/" + "\u00e9" * 100,  # 100 characters, 200 bytes
        "a/" + "\U0001f600" * 63,  # 252 bytes
        "x" * 79 + "/" + "x" * 79 + "/" + "x" * 80,  # MAX_PATH_CHARS characters
        "a/.env",
        "a/.x",
    ],
)
def test_safe_paths_pass(path):
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["caf\u00e9/x.py", "docs/Cafe\u0301.md", "\u212b.txt"])
def test_paths_are_returned_in_nfc(path):
    import unicodedata

    assert check_path(path) == unicodedata.normalize("NFC", path)
    assert check_path("docs/Cafe\u0301.md") == "docs/Caf\u00e9.md"


def test_the_component_bound_is_in_bytes():
    assert MAX_COMPONENT_BYTES == 255
    with pytest.raises(UnsafePath, match="255 bytes"):
        check_path("\u4e00" * 86)  # 86 characters, 258 bytes
    assert check_path("\u4e00" * 85)  # 255 bytes


def test_errors_name_the_character():
    with pytest.raises(UnsafePath, match="U\\+202E"):
        check_path("x\u202ey.txt")
    with pytest.raises(UnsafePath, match="device name"):
        check_path("src/NUL.tsx")
    with pytest.raises(UnsafePath, match="dot or a space"):
        check_path("src/a.tsx.")


# -- folder names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "nul", "x.", "\u202e", "a\x00"])
def test_unsafe_folder_names_are_hashed(name):
    folder = folder_name(name)
    assert folder.startswith("job-") and len(folder) == 36
    assert check_path(folder) == folder and "/" not in folder


@pytest.mark.parametrize("name", ["job-1", "shop-2", "codegen.requests:0:57", "a.b"])
def test_safe_folder_names_are_kept(name):
    assert folder_name(name) == name


def test_a_name_shaped_like_a_hash_is_hashed_too():
    hashed = folder_name(".")
    assert folder_name(hashed) != hashed
    assert len({folder_name(n) for n in [".", "..", "...", hashed, "job-1"]}) == 5


# -- conflicts between the paths of a job ------------------------------------------------

CONFLICTS = [
    (["a/b"], "a/b/c", "needs a folder 'a/b'"),
    (["a/b/c"], "a/b", "is a folder"),
    (["x/a/b/c.py"], "x/a", "is a folder"),
    (["App.tsx"], "app.tsx", "letter case"),
    (["src/App.tsx"], "SRC/App.tsx", "letter case"),
    (["Src/a.ts"], "src/b.ts", "letter case"),
    (["README.md"], "readme.MD", "letter case"),
    (["A/b"], "a/b/c", "letter case"),
    (["docs/Stra\u00dfe.md"], "docs/STRASSE.md", "letter case"),  # casefold, not lower
]


@pytest.mark.parametrize(("existing", "path", "reason"), CONFLICTS)
def test_conflicting_paths(existing, path, reason):
    problem = path_conflict(path, existing)
    assert problem is not None and reason in problem
    index = PathIndex(existing)
    with pytest.raises(UnsafePath, match="choose another path"):
        index.admit(path)


@pytest.mark.parametrize(
    ("existing", "path"),
    [
        (["a/b.py"], "a/b.py"),  # the same file again
        (["a/b.py"], "a/c.py"),
        (["a/b"], "a/bc"),
        (["a/bc/d"], "a/b"),
        (["ab/c"], "a/b"),
        (["src/App.tsx"], "src/app/index.tsx"),
        ([], "x"),
    ],
)
def test_paths_that_do_not_conflict(existing, path):
    assert path_conflict(path, existing) is None
    index = PathIndex(existing)
    assert index.admit(path) == path


def test_admitted_paths_join_the_index():
    index = PathIndex()
    index.admit("a/b.py")
    assert index.conflict("A/b.py") is not None
    assert index.conflict("a/b.py/c") is not None
    assert index.conflict("a") is not None
    assert index.conflict("a/b.py") is None


def test_the_index_answers_in_the_depth_of_the_path_not_the_number_of_files():
    index = PathIndex(f"pkg{n}/mod{m}/file{n}_{m}.py" for n in range(100) for m in range(50))
    assert index.conflict("pkg7/mod3") is not None
    assert index.conflict("PKG7/mod3/new.py") is not None
    assert index.conflict("pkg7/mod3/new.py") is None
    assert path_conflict("pkg7", index) is not None  # an index is used as it is


def test_write_file_refuses_symlinked_directories(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePath):
        write_file(root, "link/evil.txt", "x")
    assert not (outside / "evil.txt").exists()


# -- writing through directory descriptors ---------------------------------------------


def test_write_file_creates_directories(tmp_path):
    written = write_file(tmp_path / "job", "a/b/c.py", "x = 1\n")
    assert written == tmp_path / "job/a/b/c.py"
    assert written.read_text() == "x = 1\n"


def test_write_file_stores_the_nfc_path(tmp_path):
    write_file(tmp_path, "Cafe\u0301.md", "x")
    assert os.listdir(tmp_path) == ["Caf\u00e9.md"]


def test_write_file_refuses_unsafe_paths(tmp_path):
    with pytest.raises(UnsafePath):
        write_file(tmp_path / "job", "../escape.txt", "x")
    assert not (tmp_path / "escape.txt").exists()


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    os.symlink(target, tmp_path / "f.txt")
    write_file(tmp_path, "f.txt", "new")
    assert target.read_text() == "keep"
    assert not (tmp_path / "f.txt").is_symlink()
    assert (tmp_path / "f.txt").read_text() == "new"


def test_a_hard_link_at_the_target_is_replaced_not_written_through(tmp_path):
    other = tmp_path / "elsewhere.txt"
    other.write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    os.link(other, root / "f.txt")
    write_file(root, "f.txt", "new")
    assert other.read_text() == "keep"
    assert (root / "f.txt").read_text() == "new"
    assert os.stat(root / "f.txt").st_nlink == 1


def test_a_dangling_symlinked_directory_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "not-yet", root / "link")
    with pytest.raises(UnsafePath, match="symlink"):
        write_file(root, "link/evil.py", "x")
    assert not (tmp_path / "not-yet").exists()


def test_a_symlinked_directory_deep_in_the_tree_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    write_file(root, "a/b/one.py", "1")
    os.symlink(outside, root / "a/b/c")
    with pytest.raises(UnsafePath, match="'c' is a symlink"):
        write_file(root, "a/b/c/d/evil.py", "x")
    assert list(outside.iterdir()) == []


def test_a_symlink_below_the_base_is_refused_but_the_base_itself_is_followed(tmp_path):
    """The base is the operator's own choice (output.dir, export's DIR); ``below`` (the
    job's folder) is not."""
    real, outside = tmp_path / "real", tmp_path / "outside"
    real.mkdir()
    outside.mkdir()
    os.symlink(real, tmp_path / "base")
    with Tree(tmp_path / "base", "job-1") as tree:
        tree.write("a.py", "1")
    assert (real / "job-1/a.py").read_text() == "1"
    os.symlink(outside, real / "job-2")
    with Tree(tmp_path / "base", "job-2") as tree, pytest.raises(UnsafePath):
        tree.write("a.py", "1")
    assert list(outside.iterdir()) == []


def test_a_directory_swapped_for_a_symlink_after_it_was_opened_is_not_followed(tmp_path):
    """The descriptor a Tree keeps stays bound to the directory it opened: the write lands
    in that directory (moved aside here), never in the symlink's target."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    with Tree(root) as tree:
        tree.write("a/one.py", "1")
        os.rename(root / "a", root / "moved")
        os.symlink(outside, root / "a")
        tree.write("a/two.py", "2")
    assert list(outside.iterdir()) == []
    assert (root / "moved/two.py").read_text() == "2"
    with Tree(root) as tree, pytest.raises(UnsafePath):  # a new tree opens afresh
        tree.write("a/three.py", "3")
    assert list(outside.iterdir()) == []


def test_a_file_where_a_directory_is_needed_is_an_error(tmp_path):
    write_file(tmp_path, "a", "file")
    with pytest.raises(NotADirectoryError):
        write_file(tmp_path, "a/b.py", "x")


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/sub").mkdir()
    with pytest.raises(IsADirectoryError):
        write_file(tmp_path, "d/sub", "x")
    assert os.listdir(tmp_path / "d") == ["sub"]


def test_a_temporary_name_left_by_a_dead_process_is_skipped(tmp_path, monkeypatch):
    import itertools

    from daemon import paths

    monkeypatch.setattr(paths, "_temp_names", itertools.count())
    stale = tmp_path / f".codegend-{os.getpid()}-0.tmp"
    stale.write_text("stale")
    write_file(tmp_path, "f.txt", "new")
    assert (tmp_path / "f.txt").read_text() == "new"
    assert stale.read_text() == "stale"
    assert sorted(os.listdir(tmp_path)) == [stale.name, "f.txt"]


def test_modes_are_0755_and_0644_less_the_umask(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    write_file(tmp_path / "root", "a/b.py", "x")
    assert os.stat(tmp_path / "root/a").st_mode & 0o777 == 0o755 & ~mask
    assert os.stat(tmp_path / "root/a/b.py").st_mode & 0o777 == 0o644 & ~mask


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_tree_keeps_a_bounded_number_of_directories_open(tmp_path):
    before = open_fds()
    with Tree(tmp_path, max_open_dirs=3) as tree:
        for n in range(20):
            tree.write(f"d{n}/e/f.py", str(n))
            assert open_fds() <= before + 1 + 3
    assert open_fds() == before
    assert [(tmp_path / f"d{n}/e/f.py").read_text() for n in range(20)] == [
        str(n) for n in range(20)
    ]


def test_a_tree_writes_many_files_into_shared_directories(tmp_path):
    with Tree(tmp_path / "out", "job") as tree:
        for n in range(30):
            tree.write(f"src/{n % 3}/f{n}.py", str(n))
        tree.write("src/0/f0.py", "again")
    assert (tmp_path / "out/job/src/0/f0.py").read_text() == "again"
    assert len(list((tmp_path / "out/job/src").rglob("*.py"))) == 30


def test_a_plain_file_that_already_holds_the_content_is_left_alone(tmp_path):
    write_file(tmp_path, "a.py", "same")
    inode = os.stat(tmp_path / "a.py").st_ino
    write_file(tmp_path, "a.py", "same")
    assert os.stat(tmp_path / "a.py").st_ino == inode
    write_file(tmp_path, "a.py", "other")
    assert os.stat(tmp_path / "a.py").st_ino != inode
    assert (tmp_path / "a.py").read_text() == "other"


def test_a_hard_link_holding_the_same_content_is_still_replaced(tmp_path):
    """Left in place, the job's file would change with the other name."""
    other = tmp_path / "elsewhere.txt"
    other.write_text("same")
    (tmp_path / "root").mkdir()
    os.link(other, tmp_path / "root/f.txt")
    write_file(tmp_path / "root", "f.txt", "same")
    assert os.stat(tmp_path / "root/f.txt").st_nlink == 1
    assert os.stat(other).st_nlink == 1


@pytest.mark.timeout(10)
def test_a_fifo_at_the_target_is_replaced_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "f.txt")
    write_file(tmp_path, "f.txt", "new")
    assert (tmp_path / "f.txt").read_text() == "new"
