"""A quality gate over generated files: syntax, JSON, placeholders, and whether imports resolve.

Pure (the standard library only, no network) and linear in the size of the files, so it can
run after every phase. ``check_files`` looks at what one phase just wrote, against every file
of the job; ``check_project`` repeats the cross-file part (imports and declared dependencies)
at the end. Every parser here reads text a model chose: each is total (a file it cannot read
is a problem of that file, never an exception) and files over a size cap are not parsed.
The daemon runs them through ``run_checks``: in a worker process, within a time budget.

Each problem has a ``kind`` (``Problem``'s comment lists them), from which the phase runner
decides what to send back: a syntax error or a placeholder is the writing phase's to fix; an
unresolved import only once no phase still to run writes to the importing file's folder; an
undeclared package is reported when the job ends.

The modules: ``problem`` (``Problem`` and path helpers), ``content`` (one file on its own),
``python`` (Python imports), ``providers`` (declared Python distributions and the modules
each installs), ``scripts`` (TypeScript and JavaScript imports), ``project`` (the entry points
over a job's files) and ``pool`` (the worker processes).
"""

from daemon.checks.pool import (
    CHECK_WORKERS,
    WORKER_MEMORY_BYTES,
    CheckLimits,
    CheckPool,
    ChecksSkipped,
    run_checks,
    serve,
)
from daemon.checks.problem import DEFAULT_MAX_FILE_BYTES, Problem
from daemon.checks.project import check_files, check_project
from daemon.checks.scripts import MAX_ALIASES, MAX_AMBIENT_PATTERNS

__all__ = [
    "CHECK_WORKERS",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_ALIASES",
    "MAX_AMBIENT_PATTERNS",
    "WORKER_MEMORY_BYTES",
    "CheckLimits",
    "CheckPool",
    "ChecksSkipped",
    "Problem",
    "check_files",
    "check_project",
    "run_checks",
    "serve",
]
