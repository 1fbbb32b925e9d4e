"""Path safety: every path the model returns is checked before it is stored or written.

Three layers. :func:`check_path` judges one path alone: relative, POSIX, printable, NFC, a
valid name on Linux, macOS and Windows alike. :class:`PathIndex` judges a path against the
job's other paths: no file where another file needs a folder, no two names that only
letter case tells apart. :class:`Tree` writes files below one directory through directory
file descriptors, so nothing below that directory is followed if it is a symlink and
nothing is written through a hard link.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import stat
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from daemon.errors import UnsafePath

MAX_PATH_CHARS = 240  # the total bound; 240 characters are at most 960 bytes of UTF-8
MAX_COMPONENT_CHARS = 100
MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux and macOS file systems
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters a path may not hold, by Unicode category: invisible or not characters at all.
_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# Names Windows takes for devices, whatever the extension (``nul.txt`` is NUL too).
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"]
)
_HASHED_FOLDER = re.compile(r"job-[0-9a-f]{32}")


def check_path(path: str) -> str:
    """Return ``path`` in NFC if it is a safe relative POSIX path inside a project, else
    raise UnsafePath. Callers store what this returns, not what they passed: a name the
    model wrote decomposed (``e`` + U+0301) becomes the composed ``é`` that every other
    tool and file system compares equal."""
    problem = _characters(path)
    normal = unicodedata.normalize("NFC", path) if problem is None else path
    problem = problem or _problem(normal)
    if problem:
        raise UnsafePath(f"unsafe path {path!r}: {problem}")
    return normal


def _characters(path: str) -> str | None:
    if len(path) > MAX_PATH_CHARS:
        return f"longer than {MAX_PATH_CHARS} characters"
    for char in path:
        kind = _FORBIDDEN_CATEGORIES.get(unicodedata.category(char))
        if kind is not None:
            return f"contains U+{ord(char):04X}, {kind}"
    return None


def _problem(path: str) -> str | None:
    if not path or not path.strip():
        return "empty"
    if len(path) > MAX_PATH_CHARS:
        return f"longer than {MAX_PATH_CHARS} characters"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "absolute"
    if path.startswith("~"):
        return "starts with ~"
    if _DRIVE.match(path):
        return "has a drive letter"
    for part in path.split("/"):
        if problem := _component_problem(part):
            return problem
    return None


def _component_problem(part: str) -> str | None:
    if part in ("", "."):
        return "has an empty or '.' component"
    if part == "..":
        return "has a '..' component"
    if part.casefold() in (".git", "git~1"):
        return "inside .git/"
    if len(part) > MAX_COMPONENT_CHARS:
        return f"a component is longer than {MAX_COMPONENT_CHARS} characters"
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        return f"a component is longer than {MAX_COMPONENT_BYTES} bytes in UTF-8"
    if part.endswith((".", " ")):
        return f"{part!r} ends with a dot or a space (Windows drops them)"
    if part.split(".", 1)[0].rstrip(" ").upper() in _DEVICES:
        return f"{part!r} is a device name on Windows"
    return None


def folder_name(name: str) -> str:
    """``name`` as a single folder name: itself when it is one safe path component, else
    ``job-`` and a hash of it. Job ids become folders this way (``.``, ``..`` and ``nul``
    are valid request ids). A name that looks like a hash is hashed too, so no two names
    share a folder."""
    try:
        safe = check_path(name) == name and "/" not in name
    except UnsafePath:
        safe = False
    if safe and not _HASHED_FOLDER.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return "job-" + digest[:32]


# -- the job's paths together --------------------------------------------------------


def _fold(path: str) -> str:
    """The key under which case-insensitive file systems (macOS, Windows) compare names."""
    return unicodedata.normalize("NFC", path.casefold())


class PathIndex:
    """The paths of one job, for the rules that involve two of them: a file may not be a
    folder of another (``a/b`` with ``a/b/c``), and two paths may not differ only in
    letter case (``App.tsx`` with ``app.tsx``, ``Src/a.ts`` with ``src/b.ts``), since a
    checkout on macOS or Windows would merge them. The same path again is no conflict (a
    phase may send a file twice, a later phase may replace one). Each check costs the
    depth of the path, whatever the number of files."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._files: dict[str, str] = {}  # folded path -> the path
        self._folders: dict[str, tuple[str, str]] = {}  # folded folder -> (folder, a file in it)
        for path in paths:
            self.add(path)

    def add(self, path: str) -> None:
        self._files.setdefault(_fold(path), path)
        for folder in _folders_of(path):
            self._folders.setdefault(_fold(folder), (folder, path))

    def conflict(self, path: str) -> str | None:
        """Why ``path`` cannot join the job's paths, or None."""
        key = _fold(path)
        other = self._files.get(key)
        if other is not None and other != path:
            return f"differs only in letter case from {other!r}, a file of this project"
        if key in self._folders:
            below = self._folders[key][1]
            return f"is a folder of this project (it holds {below!r}), so it cannot be a file"
        for folder in _folders_of(path):
            folded = _fold(folder)
            if folded in self._files:
                return f"needs a folder {folder!r}, but {self._files[folded]!r} is a file"
            spelled, below = self._folders.get(folded, (folder, ""))
            if spelled != folder:
                return f"its folder {folder!r} differs only in letter case from {spelled!r} (of {below!r})"
        return None

    def admit(self, path: str) -> str:
        """Return ``path`` and add it, or raise UnsafePath naming the conflict."""
        problem = self.conflict(path)
        if problem:
            raise UnsafePath(f"path {path!r} {problem}; choose another path")
        self.add(path)
        return path


def path_conflict(path: str, existing_paths: PathIndex | Iterable[str]) -> str | None:
    """Why ``path`` cannot join ``existing_paths``, or None. Build a :class:`PathIndex`
    once when checking many paths against the same set."""
    index = existing_paths if isinstance(existing_paths, PathIndex) else PathIndex(existing_paths)
    return index.conflict(path)


def _folders_of(path: str) -> Iterable[str]:
    end = path.find("/")
    while end != -1:
        yield path[:end]
        end = path.find("/", end + 1)


# -- writing ---------------------------------------------------------------------------

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO planted at a file's place must not wait for a writer.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
DIR_MODE = 0o755
FILE_MODE = 0o644
MAX_OPEN_DIRS = 64
_temp_names = itertools.count()


class Tree:
    """Writes files below one directory, through directory file descriptors.

    ``base`` is the operator's or the user's own choice and is opened as it is (a symlink
    there is theirs); every component below it, ``below`` included, is opened with
    ``O_NOFOLLOW``, or made when missing, so a symlink anywhere in the tree is refused
    with UnsafePath, whenever it was planted. A file whose name is free is created with
    ``O_EXCL`` (nothing is there to follow). A plain file that already holds the content is
    left as it is (files written again at a restart). Over any other existing name, a
    file, a symlink or a hard link, the file is written to a new temporary name in its
    directory and renamed over the target: the link is replaced, never written through,
    and a reader of the old file never sees half of the new one. (A crash while a new file
    is written can leave it short: the output writer writes it again at the next start.)

    The descriptors of the directories opened are kept (up to ``max_open_dirs``, least
    recently used dropped) until :meth:`close`: a descriptor stays bound to the directory
    it opened, so a path swapped for a symlink later cannot redirect a write. Keep a Tree
    for one batch of writes: a folder the operator moves aside in between is then not
    written into by the next batch.

    Folders are made ``0o755`` and files ``0o644``, less the umask: the tree is a project
    for its user to read (often through a bind mount, as another user than the daemon's);
    who needs it private makes the base directory ``0o700`` or sets a umask of 077.
    """

    def __init__(self, base: Path, below: str = "", max_open_dirs: int = MAX_OPEN_DIRS) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self._base = base
        self._below = tuple(below.split("/")) if below else ()
        self._max_open_dirs = max(1, max_open_dirs)
        self._open: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._root = os.open(base, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))

    def __enter__(self) -> Tree:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        if self._root != -1:
            os.close(self._root)
            self._root = -1

    @property
    def path(self) -> Path:
        return self._base.joinpath(*self._below)

    def write(self, path: str, content: str | bytes) -> Path:
        """Write ``content`` at ``path`` (checked with :func:`check_path`) below the tree."""
        safe = check_path(path)
        parts = safe.split("/")
        folder = self._folder((*self._below, *parts[:-1]), safe)
        data = content.encode("utf-8") if isinstance(content, str) else content
        _replace(folder, parts[-1], data)
        return self.path / safe

    def _folder(self, parts: tuple[str, ...], path: str) -> int:
        """The descriptor of the folder ``parts`` below the base, opened or made
        component by component from the nearest one already open."""
        depth = len(parts)
        while depth and parts[:depth] not in self._open:
            depth -= 1
        fd = self._open[parts[:depth]] if depth else self._root
        if depth:
            self._open.move_to_end(parts[:depth])
        for end in range(depth + 1, len(parts) + 1):
            fd = _open_folder(fd, parts[end - 1], path)
            self._keep(parts[:end], fd)
        return fd

    def _keep(self, key: tuple[str, ...], fd: int) -> None:
        self._open[key] = fd
        while len(self._open) > self._max_open_dirs:
            _, oldest = self._open.popitem(last=False)
            os.close(oldest)


def _open_folder(parent: int, name: str, path: str) -> int:
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _refusal(parent, name, path, exc) from None
    with contextlib.suppress(FileExistsError):  # made meanwhile: the open below judges it
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(parent, name, path, exc) from None


def _refusal(parent: int, name: str, path: str, exc: OSError) -> Exception:
    """UnsafePath when ``name`` is a symlink (O_NOFOLLOW refused it), else ``exc``."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return UnsafePath(f"unsafe path {path!r}: {name!r} is a symlink; not followed")
    return exc


def _replace(folder: int, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` in ``folder`` (see :class:`Tree`)."""
    try:
        fd = os.open(name, _TEMP_FLAGS, FILE_MODE, dir_fd=folder)
    except FileExistsError:
        if not _holds(folder, name, data):
            _write_aside(folder, name, data)
        return
    _fill(fd, folder, name, data)


def _holds(folder: int, name: str, data: bytes) -> bool:
    """Whether ``name`` is a plain file (no symlink, no other hard link) holding exactly
    ``data``, so that there is nothing to write."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return False  # a symlink (refused by O_NOFOLLOW), unreadable: replace it
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(fd)
        plain = stat.S_ISREG(found.st_mode) and found.st_nlink == 1
        return plain and found.st_size == len(data) and handle.read(len(data) + 1) == data


def _write_aside(folder: int, name: str, data: bytes) -> None:
    temp, fd = _temp_file(folder)
    _fill(fd, folder, temp, data)
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise


def _fill(fd: int, folder: int, name: str, data: bytes) -> None:
    """Write ``data`` to the new file ``fd`` (``name``); remove it if that fails."""
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
        raise


def _temp_file(folder: int) -> tuple[str, int]:
    while True:
        temp = f".codegend-{os.getpid()}-{next(_temp_names)}.tmp"
        try:
            return temp, os.open(temp, _TEMP_FLAGS, FILE_MODE, dir_fd=folder)
        except FileExistsError:
            continue  # left by a process that died: take the next name


def write_file(root: Path, path: str, content: str | bytes) -> Path:
    """Write one file below ``root`` (see :class:`Tree`, whose rules apply)."""
    with Tree(root) as tree:
        return tree.write(path, content)
