"""Test-only crash points for the chaos suite.

``CODEGEND_CHAOS_POINT=<name>`` and ``CODEGEND_CHAOS_AFTER=<n>`` make the process kill
itself with SIGKILL the n-th time it passes that point (n defaults to 1);
``CODEGEND_CHAOS_JOB=<text>`` counts only passes for jobs whose id contains it. Unset
(always, outside tests), ``point()`` is one comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"after_create", "mid_stream", "after_answer", "after_commit", "after_publish"})
_armed = os.environ.get("CODEGEND_CHAOS_POINT")
_remaining = int(os.environ.get("CODEGEND_CHAOS_AFTER", "1"))
_job = os.environ.get("CODEGEND_CHAOS_JOB")
if _armed is not None and _armed not in POINTS:
    raise ValueError(f"CODEGEND_CHAOS_POINT={_armed!r} is none of {sorted(POINTS)}")


def point(name: str, job_id: str | None = None) -> None:
    global _remaining
    if _armed != name or (_job is not None and _job not in (job_id or "")):
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
