"""``codegend run`` sampled by pyinstrument only between SIGUSR1 (start sampling) and SIGUSR2
(stop and save the session to the file named by the first argument), so the profile covers
the measured window and not the imports, start-up or shutdown.

    python -m bench.profiled_daemon PROFILE.pyisession
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

SAMPLE_INTERVAL_S = 0.001


def main() -> None:
    session_path = Path(sys.argv[1])
    profiler = Profiler(interval=SAMPLE_INTERVAL_S, async_mode="disabled")

    def start(*_: Any) -> None:
        if not profiler.is_running:
            profiler.start()

    def stop(*_: Any) -> None:
        if profiler.is_running:
            profiler.stop().save(session_path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["codegend", "run"]
    from daemon.cli import main as codegend

    codegend()


if __name__ == "__main__":
    main()
