"""``python -m bench.output_writer [--jobs N] [--rounds N]``: the cost of writing job files
into ``output.dir``, the path-based writer it replaced beside the descriptor-based one
(:class:`daemon.paths.Tree`, as :class:`daemon.outputs.OutputWriter` uses it), in one run
on the same disk. Each round writes every job's phases once into a fresh folder (new
files), then the same again over them (what ``restore_outputs`` does at a restart), then
other content over them (a phase run again).

The old writer is kept here only to be measured: it checked each directory once per
process and then trusted its path, and wrote through a symlink or a hard link at a target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daemon.outputs import output_folder
from daemon.paths import Tree, check_path

Batch = tuple[str, list[tuple[str, str]]]  # a job id and one phase's files
Writer = Callable[[Path, list[Batch]], None]

# One job: 11 phases, 30 files in the folders a generated project has (as the fake model).
PHASE_FILES = [
    ["docs/architecture.md"],
    ["database/schema.sql", "database/migrations/001_init.sql", "database/seed.sql"],
    ["backend/app/main.py", "backend/app/config.py", "backend/requirements.txt"],
    ["backend/app/models/item.py", "backend/app/schemas/item.py"],
    ["backend/app/routes/items.py", "backend/app/services/items.py"],
    ["backend/app/middleware/auth.py", "backend/app/utils/errors.py", "backend/app/db.py"],
    ["frontend/package.json", "frontend/tsconfig.json", "frontend/vite.config.ts"],
    ["frontend/src/main.tsx", "frontend/src/App.tsx", "frontend/src/api/client.ts"],
    ["frontend/src/pages/Home.tsx", "frontend/src/pages/Items.tsx"],
    ["frontend/src/components/Layout.tsx", "frontend/src/components/ui/Button.tsx"],
    ["README.md", ".env.example", "docker-compose.yml", "backend/Dockerfile"],
]


def batches(jobs: int, size_bytes: int) -> list[Batch]:
    content = "x" * (size_bytes - 1) + "\n"
    return [
        (f"bench-{n}", [(path, content) for path in phase])
        for n in range(jobs)
        for phase in PHASE_FILES
    ]


def old_write_file(root: Path, path: str, content: str, checked: set[Path]) -> None:
    check_path(path)
    target = root
    if root not in checked:
        root.mkdir(parents=True, exist_ok=True)
        checked.add(root)
    for part in path.split("/")[:-1]:
        target = target / part
        if target in checked:
            continue
        if target.is_symlink():
            raise OSError(f"{target} is a symlink")
        target.mkdir(exist_ok=True)
        checked.add(target)
    target = target / path.rsplit("/", 1)[-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode("utf-8"))


def old_writer(out: Path, work: list[Batch]) -> None:
    checked: set[Path] = set()
    for job_id, files in work:
        root = out / output_folder(job_id)
        for path, content in files:
            old_write_file(root, path, content, checked)


def new_writer(out: Path, work: list[Batch]) -> None:
    for job_id, files in work:
        with Tree(out, output_folder(job_id)) as tree:
            for path, content in files:
                tree.write(path, content)


def timed(writer: Writer, scratch: Path, work: list[Batch]) -> list[float]:
    """Seconds to write ``work`` into a fresh folder, again, then changed."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    changed = [(job, [(path, content + "#\n") for path, content in files]) for job, files in work]
    seconds = []
    for batch in (work, work, changed):
        started = time.perf_counter()
        writer(out, batch)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.output_writer", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per round (30 files each)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown")
    parser.add_argument("--size", type=int, default=3000, help="bytes per file")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    work = batches(args.jobs, args.size)
    files = sum(len(f) for _, f in work)
    results: dict[str, list[list[float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for _ in range(args.rounds):  # interleaved, so both see the same disk and cache
            for name, writer in (("old", old_writer), ("new", new_writer)):
                results[name].append(timed(writer, Path(scratch), work))
    print(f"{files} files of {args.size} bytes, {args.rounds} rounds, median per file:")
    print(f"{'':8}{'old (path)':>14}{'new (dirfd)':>14}{'new / old':>11}")
    for index, label in enumerate(("new", "same", "changed")):
        old = statistics.median(r[index] for r in results["old"]) / files * 1e6
        new = statistics.median(r[index] for r in results["new"]) / files * 1e6
        print(f"{label:8}{old:>11.1f} us{new:>11.1f} us{new / old:>10.2f}x")


if __name__ == "__main__":
    main()
