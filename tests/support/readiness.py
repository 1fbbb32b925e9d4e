"""Whether a daemon started as a subprocess is ready: ``codegend run --ready-file PATH``
(or ``CODEGEND_READY_FILE``) writes PATH once intake runs, naming its pid, and removes it
when it stops. A file left by a killed daemon names another pid, so it never counts."""

from __future__ import annotations

import json
from pathlib import Path

READY_FILE_ENV = "CODEGEND_READY_FILE"


def ready_pid(path: Path) -> int | None:
    """The pid of the daemon that says it is ready in ``path``, or None (no file yet)."""
    try:
        pid = json.loads(path.read_text())["pid"]
    except FileNotFoundError:
        return None
    return int(pid)


def is_ready(path: Path, pid: int) -> bool:
    """Whether the daemon with ``pid`` has written ``path``."""
    return ready_pid(path) == pid
