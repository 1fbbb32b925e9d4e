"""The scenarios of issue 5, each measured side by side within one run.

Each returns a result record; ``bench.report`` turns them into RESULTS.md and the plot.
A mode that cannot be measured (a timeout, a daemon that will not start) is recorded
with its error and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import profile
from bench.harness import Bench, EventLog, Seen, Setup, following, make_requests
from bench.procs import (
    DAEMON_COMMAND,
    ROOT,
    BenchError,
    DaemonProcess,
    ModelServer,
    cpu_times,
    machine_busy_s,
    self_cpu_s,
)
from daemon.states import PHASE_NAMES

log = logging.getLogger("bench")
MODES = ("sequential", "parallel")
PHASES_PER_JOB = len(PHASE_NAMES)
CRITICAL_PATH_CALLS = 5  # ARCH, DB, BE_MODELS, BE_ROUTES, CONFIG
CRASH_CASES: dict[str, tuple[str | None, int]] = {
    # case: (chaos point, after how many passes); "SIGKILL" is sent from outside
    "SIGKILL": (None, 12),
    "after_create": ("after_create", 4),
    "mid_stream": ("mid_stream", 40),
    "after_answer": ("after_answer", 12),
    "after_commit": ("after_commit", 12),
    "after_publish": ("after_publish", 3),
}
MEMORY_SAMPLE_S = 2.0
SAMPLE_EVERY_S = 0.1


@dataclass(frozen=True)
class Sizes:
    latency_s: float = 0.2
    latency_repeats: int = 5
    throughput_jobs: int = 200
    max_concurrent: int = 50
    overhead_jobs: int = 200
    memory_jobs: int = 1000
    memory_running: int = 50
    memory_latency_s: float = 120.0
    crash_jobs: int = 8
    crash_cases: tuple[str, ...] = tuple(CRASH_CASES)
    modes: tuple[str, ...] = MODES

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            latency_repeats=1,
            throughput_jobs=50,
            overhead_jobs=40,
            memory_jobs=200,
            memory_latency_s=60.0,
            crash_jobs=4,
            crash_cases=("SIGKILL",),
        )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def _warm_up(events: EventLog, name: str, timeout_s: float = 120.0) -> None:
    """One job through every phase first: the group join, connections, imports and caches
    are then behind us when the measurement starts."""
    [request] = make_requests(f"{name}-warmup", 1)
    await events.submit([request])
    await events.wait_completed({str(request.request_id)}, timeout_s)


# ---------------------------------------------------------------------------- 1. latency


@dataclass
class LatencyResult:
    latency_s: float
    runs_s: dict[str, list[float]] = field(default_factory=dict)
    # per mode, per part of a job's time (see LATENCY_PARTS): one value per run
    parts_s: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median_s(self, mode: str) -> float:
        return _median(self.runs_s.get(mode, []))

    def part_s(self, mode: str, part: str) -> float:
        return _median(self.parts_s.get(mode, {}).get(part, []))

    @property
    def ratio(self) -> float:
        return self.median_s("parallel") / self.median_s("sequential")


async def job_latency(bench: Bench, sizes: Sizes) -> LatencyResult:
    result = LatencyResult(sizes.latency_s)
    with bench.model_server("latency", sizes.latency_s) as server:
        for mode in sizes.modes:
            try:
                await _latency_runs(bench, server, mode, sizes, result)
            except BenchError as exc:
                result.errors[mode] = str(exc)
            log.info("latency %s: %s", mode, result.runs_s.get(mode) or result.errors.get(mode))
    return result


async def _latency_runs(
    bench: Bench, server: ModelServer, mode: str, sizes: Sizes, result: LatencyResult
) -> None:
    setup = bench.setup(f"latency-{mode}", jobs={"execution": mode, "max_concurrent": 1})
    timeout_s = 60 + 5 * PHASES_PER_JOB * sizes.latency_s
    async with setup.daemon(server), following(setup, bench) as events:
        await _warm_up(events, setup.name)
        runs = result.runs_s.setdefault(mode, [])
        requests = make_requests(setup.name, sizes.latency_repeats)
        parts = result.parts_s.setdefault(mode, {})
        for request in requests:
            submitted_wall_s = time.time()
            submitted = await events.submit([request])
            [done] = await events.wait_completed({str(request.request_id)}, timeout_s)
            runs.append(done.at_s - submitted)
            job_parts = _latency_parts(events, done, submitted_wall_s, sizes.latency_s)
            for part, seconds in job_parts.items():
                parts.setdefault(part, []).append(seconds)
        result.statuses[mode] = events.statuses({str(r.request_id) for r in requests})


LATENCY_PARTS = {
    "intake": "submit to job.accepted (produce, consume, create the job)",
    "daemon": "job.accepted to job.completed (the daemon's timestamps)",
    "publish": "job.completed stamped to received by the client",
    "phase_extra": "mean phase duration_s minus L (one call per phase)",
}


def _latency_parts(
    events: EventLog, done: Seen, submitted_wall_s: float, latency_s: float
) -> dict[str, float]:
    """Where one job's time went, from its events' timestamps (one clock: this machine's)."""
    job_id = done.event.job_id
    [accepted] = events.of_job("job.accepted", job_id)
    completed_ts = done.event.ts.timestamp()
    durations = [s.event.duration_s or 0.0 for s in events.of_job("phase.completed", job_id)]
    return {
        "intake": accepted.event.ts.timestamp() - submitted_wall_s,
        "daemon": completed_ts - accepted.event.ts.timestamp(),
        "publish": done.at_wall_s - completed_ts,
        "phase_extra": statistics.fmean(durations) - latency_s if durations else float("nan"),
    }


# ---------------------------------------------------------- 2. and 3. batches of jobs


@dataclass
class BatchRun:
    """N jobs submitted at once to a warmed-up daemon, until the last job.completed."""

    mode: str
    jobs: int
    wall_s: float
    phases: int
    completions_s: list[float]  # seconds from the first submit to each job.completed
    statuses: Counter[str]
    cpu_s: dict[str, float]  # CPU seconds per process during the batch
    phase_s: float  # mean duration_s of the phase.completed events (start to commit)
    daemon_system_s: float = 0.0  # of the daemon's CPU seconds, those spent in the kernel

    @property
    def phases_per_s(self) -> float:
        return self.phases / self.wall_s

    @property
    def daemon_ms_per_phase(self) -> float:
        return 1000 * self.cpu_s["daemon"] / self.phases

    @property
    def daemon_system_ms_per_phase(self) -> float:
        return 1000 * self.daemon_system_s / self.phases


Hook = Callable[[DaemonProcess], Awaitable[None]]


async def _no_hook(daemon: DaemonProcess) -> None:
    return None


def _cpu(bench: Bench, server: ModelServer, daemon: DaemonProcess) -> dict[str, float]:
    """CPU seconds of each process of the run, and of every other process on the machine."""
    ours = {
        "daemon": daemon.cpu_s(),
        "model server": server.cpu_s(),
        "broker (tansu)": bench.broker_cpu_s(),
        "benchmark client": self_cpu_s(),
    }
    return ours | {"other processes": machine_busy_s() - sum(ours.values())}


async def run_batch(
    bench: Bench,
    server: ModelServer,
    setup: Setup,
    jobs: int,
    timeout_s: float,
    command: tuple[str, ...] = DAEMON_COMMAND,
    before: Hook = _no_hook,
    after: Hook = _no_hook,
) -> BatchRun:
    mode = setup.config["jobs"]["execution"]
    async with setup.daemon(server, command=command) as daemon, following(setup, bench) as events:
        await _warm_up(events, setup.name)
        requests = make_requests(setup.name, jobs)
        ids = {str(r.request_id) for r in requests}
        await before(daemon)
        cpu_before = _cpu(bench, server, daemon)
        system_before = cpu_times(daemon.pid)[1]
        submitted = await events.submit(requests)
        done = await events.wait_completed(ids, timeout_s)
        cpu_after = _cpu(bench, server, daemon)
        system_s = cpu_times(daemon.pid)[1] - system_before
        await after(daemon)
        return BatchRun(
            mode=mode,
            jobs=jobs,
            wall_s=max(s.at_s for s in done) - submitted,
            phases=events.count("phase.completed", ids),
            completions_s=sorted(s.at_s - submitted for s in done),
            statuses=events.statuses(ids),
            cpu_s={name: cpu_after[name] - cpu_before[name] for name in cpu_before},
            phase_s=_mean_phase_s(events, ids),
            daemon_system_s=system_s,
        )


def _mean_phase_s(events: EventLog, jobs: set[str]) -> float:
    durations = [
        s.event.duration_s or 0.0
        for s in events.by_type["phase.completed"]
        if s.event.job_id in jobs
    ]
    return statistics.fmean(durations) if durations else float("nan")


@dataclass
class ThroughputResult:
    latency_s: float
    jobs: int
    max_concurrent: int
    runs: dict[str, BatchRun] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ideal_s(self) -> float:
        """N / max_concurrent x 11 x L: every slot busy with one call at a time."""
        return self.jobs / self.max_concurrent * PHASES_PER_JOB * self.latency_s

    @property
    def parallel_floor_s(self) -> float:
        """The same with only the critical path's calls in sequence."""
        return self.jobs / self.max_concurrent * CRITICAL_PATH_CALLS * self.latency_s


def _batch_setup(bench: Bench, name: str, mode: str, max_concurrent: int) -> Setup:
    return bench.setup(name, jobs={"execution": mode, "max_concurrent": max_concurrent})


async def throughput(bench: Bench, sizes: Sizes) -> ThroughputResult:
    result = ThroughputResult(sizes.latency_s, sizes.throughput_jobs, sizes.max_concurrent)
    timeout_s = 120 + 10 * result.ideal_s
    with bench.model_server("throughput", sizes.latency_s) as server:
        for mode in sizes.modes:
            setup = _batch_setup(bench, f"throughput-{mode}", mode, sizes.max_concurrent)
            try:
                run = await run_batch(bench, server, setup, result.jobs, timeout_s)
            except BenchError as exc:
                result.errors[mode] = str(exc)
                log.info("throughput %s: %s", mode, exc)
                continue
            result.runs[mode] = run
            log.info("throughput %s: %.2f s (ideal %.2f s)", mode, run.wall_s, result.ideal_s)
    return result


@dataclass
class OverheadResult:
    jobs: int
    max_concurrent: int
    runs: dict[str, BatchRun] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    profiled: BatchRun | None = None
    profile: profile.ProfileSummary | None = None
    profile_error: str = ""


async def overhead(bench: Bench, sizes: Sizes, profile_txt: Path) -> OverheadResult:
    result = OverheadResult(sizes.overhead_jobs, sizes.max_concurrent)
    timeout_s = 600.0
    with bench.model_server("overhead", 0.0) as server:
        for mode in sizes.modes:
            setup = _batch_setup(bench, f"overhead-{mode}", mode, sizes.max_concurrent)
            try:
                result.runs[mode] = run = await run_batch(
                    bench, server, setup, result.jobs, timeout_s
                )
            except BenchError as exc:
                result.errors[mode] = str(exc)
                log.info("overhead %s: %s", mode, exc)
                continue
            log.info(
                "overhead %s: %.0f phases/s, %.2f ms daemon CPU per phase",
                mode,
                run.phases_per_s,
                run.daemon_ms_per_phase,
            )
        try:
            await _profiled(bench, server, result, sizes.modes[0], profile_txt, timeout_s)
        except BenchError as exc:
            result.profile_error = str(exc)
    return result


async def _profiled(
    bench: Bench,
    server: ModelServer,
    result: OverheadResult,
    mode: str,
    profile_txt: Path,
    timeout_s: float,
) -> None:
    """The same batch once more with the daemon under pyinstrument, sampled over the batch."""
    setup = _batch_setup(bench, f"overhead-profiled-{mode}", mode, result.max_concurrent)
    session_path = setup.workdir / "daemon.pyisession"
    command = (sys.executable, "-m", "bench.profiled_daemon", str(session_path))

    async def start_sampling(daemon: DaemonProcess) -> None:
        daemon.send(signal.SIGUSR1)
        await asyncio.sleep(0.1)

    async def stop_sampling(daemon: DaemonProcess) -> None:
        daemon.send(signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not session_path.exists() or _still_growing(session_path):
            if time.monotonic() > deadline:
                raise BenchError("the profiled daemon wrote no profile")
            await asyncio.sleep(0.2)

    run = await run_batch(
        bench, server, setup, result.jobs, timeout_s, command, start_sampling, stop_sampling
    )
    session = profile.load(session_path)
    result.profiled, result.profile = run, profile.summarise(session)
    title = (
        f"codegend daemon under pyinstrument: {run.jobs} jobs ({run.phases} phases), "
        f"{mode} execution, zero-latency model, jobs.max_concurrent = {result.max_concurrent}; "
        "sampled from the first submit to the last job.completed"
    )
    profile_txt.write_text(profile.render_text(session, result.profile, title))
    log.info("profile written to %s", profile_txt)


def _still_growing(path: Path) -> bool:
    size = path.stat().st_size
    time.sleep(0.05)
    return path.stat().st_size != size


# ---------------------------------------------------------------------------- 4. memory


@dataclass
class MemoryRun:
    mode: str
    submitted: int
    running: int
    idle_rss_kib: int
    peak_rss_kib: int
    store_bytes: int


@dataclass
class MemoryResult:
    jobs: int
    max_concurrent: int
    latency_s: float
    runs: dict[str, MemoryRun] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


async def memory(bench: Bench, sizes: Sizes) -> MemoryResult:
    result = MemoryResult(sizes.memory_jobs, sizes.memory_running, sizes.memory_latency_s)
    with bench.model_server("memory", sizes.memory_latency_s) as server:
        for mode in sizes.modes:
            try:
                result.runs[mode] = run = await _memory_run(bench, server, mode, result)
            except BenchError as exc:
                result.errors[mode] = str(exc)
                log.info("memory %s: %s", mode, exc)
                continue
            log.info("memory %s: peak RSS %.0f MiB", mode, run.peak_rss_kib / 1024)
    return result


async def _memory_run(
    bench: Bench, server: ModelServer, mode: str, result: MemoryResult
) -> MemoryRun:
    setup = bench.setup(
        f"memory-{mode}",
        jobs={"execution": mode, "max_concurrent": result.max_concurrent, "shutdown_grace_s": 0},
    )
    async with setup.daemon(server) as daemon, following(setup, bench) as events:
        await asyncio.sleep(0.5)
        idle_rss_kib = daemon.rss_kib()
        requests = make_requests(setup.name, result.jobs)
        ids = {str(r.request_id) for r in requests}
        await events.submit(requests)

        def started_jobs() -> set[str]:
            return {s.event.job_id for s in events.by_type["phase.started"]} & ids

        await events.wait_until(
            lambda: (
                events.count("job.accepted", ids) >= len(ids)
                and len(started_jobs()) >= result.max_concurrent
            ),
            120 + result.jobs / 10,
            f"{len(ids)} jobs accepted and {result.max_concurrent} running",
        )
        if events.count("job.completed", ids):
            raise BenchError("jobs completed while sampling: raise the model latency")
        peak = await _sample_peak(daemon)
        running = len(started_jobs())
        store_bytes = sum(
            p.stat().st_size for p in setup.store_path.parent.glob(setup.store_path.name + "*")
        )
    return MemoryRun(mode, result.jobs, running, idle_rss_kib, peak, store_bytes)


async def _sample_peak(daemon: DaemonProcess) -> int:
    deadline = time.monotonic() + MEMORY_SAMPLE_S
    peak = 0
    while time.monotonic() < deadline:
        peak = max(peak, daemon.peak_rss_kib())
        await asyncio.sleep(SAMPLE_EVERY_S)
    return peak


# ----------------------------------------------------------------------- 5. crash cost


@dataclass
class CrashRun:
    case: str
    in_flight: int  # jobs started and not completed when the daemon died
    to_running_s: float  # process start to its ready file
    to_resumed_s: float | None  # process start to the first job.resumed (its ts)
    to_first_phase_s: float  # process start to the first phase.started (its ts)
    to_first_phase_seen_s: float  # ... as the client received it
    statuses: Counter[str]


@dataclass
class CrashResult:
    jobs: int
    latency_s: float
    import_s: float = 0.0  # a fresh interpreter importing the daemon's modules
    slowest_imports: list[tuple[str, float]] = field(default_factory=list)
    runs: list[CrashRun] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


IMPORTS = "import os, daemon.cli, daemon.service; os._exit(0)"


async def import_time_s() -> tuple[float, list[tuple[str, float]]]:
    """Wall time of a fresh interpreter importing what ``codegend run`` imports (leaving
    without the interpreter's teardown), and, from a second one run with ``-X importtime``,
    the packages that take longest."""
    started = time.monotonic()
    plain = await asyncio.create_subprocess_exec(sys.executable, "-c", IMPORTS, cwd=ROOT)
    await plain.wait()
    elapsed_s = time.monotonic() - started
    timed = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-c", IMPORTS, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await timed.communicate()
    return elapsed_s, _slowest_packages(stderr.decode(errors="replace"))


def _slowest_packages(importtime: str, count: int = 4) -> list[tuple[str, float]]:
    """Top-level packages (other than the daemon's) by cumulative import time."""
    packages: dict[str, float] = {}
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if "." not in name and name != "daemon":
            packages[name] = max(packages.get(name, 0.0), int(parts[1]) / 1e6)
    return sorted(packages.items(), key=lambda item: -item[1])[:count]


async def crash_cost(bench: Bench, sizes: Sizes) -> CrashResult:
    result = CrashResult(sizes.crash_jobs, sizes.latency_s)
    result.import_s, result.slowest_imports = await import_time_s()
    with bench.model_server("crash", sizes.latency_s) as server:
        for case in sizes.crash_cases:
            try:
                run = await _crash_run(bench, server, case, result.jobs)
            except BenchError as exc:
                result.errors[case] = str(exc)
                log.info("crash %s: %s", case, exc)
                continue
            result.runs.append(run)
            log.info(
                "crash %s: first resumed phase %.2f s after restart", case, run.to_first_phase_s
            )
    return result


def _first_since(events: EventLog, type_: str, since: float) -> Seen | None:
    """The first event of that type stamped (``ts``) at or after ``since`` (time.time())."""
    later = [s for s in events.by_type[type_] if s.event.ts.timestamp() >= since]
    return min(later, key=lambda s: s.event.ts, default=None)


async def _crash_run(bench: Bench, server: ModelServer, case: str, jobs: int) -> CrashRun:
    point, after = CRASH_CASES[case]
    setup = bench.setup(f"crash-{case.lower().replace('_', '-')}", jobs={"max_concurrent": jobs})
    chaos = {"CODEGEND_CHAOS_POINT": point, "CODEGEND_CHAOS_AFTER": str(after)} if point else {}
    first, second = setup.daemon(server, chaos), setup.daemon(server)
    try:
        await first.start()
        async with following(setup, bench) as events:
            requests = make_requests(setup.name, jobs)
            ids = {str(r.request_id) for r in requests}
            await events.submit(requests)
            await _crash(first, events, ids, point, after)
            started = {s.event.job_id for s in events.by_type["phase.started"]}
            finished = {s.event.job_id for s in events.by_type["job.completed"]}
            run = await _restart(second, events, case, len(started - finished))
            await events.wait_completed(ids, 120)
            run.statuses = events.statuses(ids)
            await second.stop()
    finally:
        for daemon in (first, second):
            if daemon.alive:
                await daemon.kill()
    return run


async def _restart(daemon: DaemonProcess, events: EventLog, case: str, in_flight: int) -> CrashRun:
    """Start the new daemon; time its way to the first phase it starts."""
    to_running_s = await daemon.start()
    restart = daemon.started_at
    restart_monotonic = time.monotonic() - (time.time() - restart)
    await events.wait_until(
        lambda: _first_since(events, "phase.started", restart) is not None,
        60,
        "a phase.started after the restart",
    )
    first_phase = _first_since(events, "phase.started", restart)
    assert first_phase is not None
    resumed = _first_since(events, "job.resumed", restart)
    return CrashRun(
        case=case,
        in_flight=in_flight,
        to_running_s=to_running_s,
        to_resumed_s=None if resumed is None else resumed.event.ts.timestamp() - restart,
        to_first_phase_s=first_phase.event.ts.timestamp() - restart,
        to_first_phase_seen_s=first_phase.at_s - restart_monotonic,
        statuses=Counter(),
    )


async def _crash(
    daemon: DaemonProcess, events: EventLog, jobs: set[str], point: str | None, after: int
) -> None:
    """SIGKILL from outside after ``after`` phases completed, or wait for the chaos point
    to kill the daemon."""
    if point is None:
        await events.wait_until(
            lambda: events.count("phase.completed") >= after, 60, f"{after} phases completed"
        )
        await daemon.kill()
        return
    with contextlib.suppress(BenchError):
        await events.wait_until(
            lambda: not daemon.alive or events.count("job.completed", jobs) >= len(jobs),
            60,
            "the chaos point",
        )
    if daemon.alive:
        await daemon.kill()
        raise BenchError(f"the chaos point {point} was not passed {after} times during the run")
