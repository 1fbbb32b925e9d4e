"""FAILOVER.md: the figures of ``python -m bench.failover``, each with what it measures."""

from __future__ import annotations

import statistics
from datetime import UTC
from typing import TYPE_CHECKING

from bench.report import _statuses, _table

if TYPE_CHECKING:
    from bench.failover import (
        BytesResult,
        CostResult,
        FailoverResult,
        KillRun,
        RestoreResult,
        Results,
        ThroughputResult,
    )

KB = 1000
MB = 1000 * 1000
# docs/cluster-design.md section 1.4: the demo job's estimate, per part, in KB
DESIGN_KB = {
    "state": (1.5, 60.0),
    "request": (2.5, 2.5),
    "plan": (45.0, 180.0),
    "phase": (10.0, 10.0),
    "file": (135.0, 135.0),
    "event": (0.0, 25.0),
}
DESIGN_TOTAL_KB = (195.0, 410.0)
KIND_NAMES = {
    "state": "`J` (the job's state)",
    "request": "`J/request`",
    "plan": "`J/plan`",
    "phase": "`J/phase/*`",
    "file": "`J/file/*`",
    "event": "`J/event/*`",
}
PARTS = ("detection", "rebalance", "restore", "to first call")
PART_HEADERS = {"detection": "detection (session timeout)"}


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def _kb(size: float) -> str:
    return f"{size / KB:.1f} KB"


def _spread(values: list[float]) -> str:
    """``median (range lo-hi, n)`` of some seconds."""
    if not values:
        return "n/a"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f} s (1 kill)"
    return f"{mid:.2f} s (range {min(values):.2f}-{max(values):.2f} s, {len(values)} kills)"


def _errors(errors: list[str]) -> list[str]:
    return [
        f"- not measured: {e.strip().splitlines()[0] if e.strip() else 'error'}" for e in errors
    ]


# ------------------------------------------------------------------------------ summary


def summary_rows(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    if results.failover:
        rows += _failover_summary(results.failover)
    if results.restore and results.restore.runs:
        for run in results.restore.runs:
            rows.append(
                [
                    f"restore, a partition of {run.jobs:,} finished jobs",
                    f"**{run.seconds:.2f} s**, {run.bytes / MB:.2f} MB read ({run.records:,} records)",
                ]
            )
    if results.bytes and results.bytes.kinds:
        b = results.bytes
        rows.append(
            [
                "changelog bytes of the demo job: kept after compaction / written",
                f"**{_kb(b.kept)} / {_kb(b.written)}** (design 1.4: "
                f"{DESIGN_TOTAL_KB[0]:.0f} KB / {DESIGN_TOTAL_KB[1]:.0f} KB)",
            ]
        )
    if results.throughput and results.throughput.runs:
        runs = results.throughput.runs
        base = runs[0].per_min
        shown = ", ".join(f"{r.daemons}: {r.per_min:.1f} ({r.per_min / base:.2f}x)" for r in runs)
        rows.append(["throughput, jobs/min by daemons (vs 1 daemon)", shown])
    if results.cost and results.cost.runs_s:
        c = results.cost
        ratio = c.median_s("on") / c.median_s("off")
        rows.append(
            [
                "job latency on one daemon, cluster mode on / off",
                f"**{ratio:.2f}** ({c.median_s('on'):.2f} s / {c.median_s('off'):.2f} s)",
            ]
        )
    return rows


def _failover_summary(result: FailoverResult) -> list[list[str]]:
    rows = []
    for runs in _by_session(result.runs).values():
        label = _session_label(runs[0])
        rows.append(
            [
                f"failover, {label}: kill to the first model call of a moved job",
                f"**{_spread([r.first_call_s for r in runs])}**",
            ]
        )
        rows.append(
            [
                f"failover, {label}: kill to its `job.resumed` (reason failover)",
                _spread([r.resumed_s for r in runs]),
            ]
        )
    return rows


def _by_session(runs: list[KillRun]) -> dict[int, list[KillRun]]:
    found: dict[int, list[KillRun]] = {}
    for run in runs:
        found.setdefault(run.session_ms, []).append(run)
    return found


def _session_label(run: KillRun) -> str:
    from bench.failover import DEFAULT_SESSION_MS

    which = "the default" if run.session_ms == DEFAULT_SESSION_MS else "short, not the default"
    return f"session_timeout_ms = {run.session_ms} ({which})"


def summary_lines(results: Results) -> list[str]:
    return [f"{name}: {value.replace('**', '')}" for name, value in summary_rows(results)]


# ----------------------------------------------------------------------------- sections


def failover_section(result: FailoverResult) -> list[str]:
    from bench.failover import FAILOVER_MAX_CONCURRENT, JOB_TIMEOUT_S

    lines = [
        "## 1. Time to failover",
        "",
        f"Three daemons in one group, three requests partitions (one each), {result.jobs} "
        f"keyed requests (two per partition), model latency {result.latency_s:.1f} s per "
        f"call, `jobs.max_concurrent = {FAILOVER_MAX_CONCURRENT}` (the new owner has slots "
        "free for the jobs it takes over). Once every job has committed its first phase, "
        "one daemon is SIGKILLed by its pid; its unfinished jobs are the moved ones. Timed "
        "from the kill (`time.time()` just before the signal): the first `job.resumed` of "
        "a moved job with reason `failover` (its `ts`, and when the client received it) and "
        "the first model call of a moved job (the Messages server's request log: a call "
        "after the kill is another daemon's). After each kill the jobs end (up to "
        f"{JOB_TIMEOUT_S:.0f} s) and the killed daemon restarts on its store before the next.",
        "",
        "The time to the first call, split from the daemons' logs (JSON, to the "
        "millisecond): **detection**, the kill to the first survivor's heartbeat refused "
        "with `REBALANCE_IN_PROGRESS` (its floor is the session timeout, from the victim's "
        "last heartbeat, plus up to one heartbeat interval of the survivor); **rebalance**, "
        "to the new owner's assignment (`consuming ... restoring [p]`); **restore**, to its "
        "`partition p: restored K jobs in X s` line (X, the daemon's own figure, is in its "
        "own column: membership proof, reading the changelog partition, the claim, the "
        "import); **to first call**, to the moved job's first model call.",
        "",
    ]
    header = [
        "kill",
        "session / heartbeat",
        "moved",
        *(PART_HEADERS.get(p, p) for p in PARTS),
        "kill to first call",
        "kill to job.resumed (ts / received)",
        "restore (daemon)",
        "jobs",
    ]
    rows = []
    for n, run in enumerate(result.runs, 1):
        parts = run.parts
        rows.append(
            [
                str(n),
                f"{run.session_ms} / {run.heartbeat_ms} ms",
                f"{run.moved} (restored {run.restored_jobs})",
                *(_s(parts[p]) for p in PARTS),
                f"**{_s(run.first_call_s)}**",
                f"{_s(run.resumed_s)} / {_s(run.resumed_seen_s)}",
                _s(run.restore_s),
                _statuses(run.statuses),
            ]
        )
    lines += _table(header, rows) + [""]
    for runs in _by_session(result.runs).values():
        lines += _failover_medians(runs)
    lines += _errors(result.errors)
    lines.append("")
    for runs in _by_session(result.runs).values():
        lines += _failover_reading(runs)
    return lines


def _failover_reading(runs: list[KillRun]) -> list[str]:
    """What the split of one session timeout's kills says, in the figures measured."""
    session_s = runs[0].session_ms / 1000
    detection = [v for r in runs if (v := r.parts["detection"]) is not None]
    rebalance = [v for r in runs if (v := r.parts["rebalance"]) is not None]
    daemon = [r.first_call_s - r.assigned_s for r in runs]
    if not detection or not rebalance:
        return []
    total = statistics.median([r.first_call_s for r in runs])
    group = statistics.median(detection) + statistics.median(rebalance)
    return [
        f"With `session_timeout_ms = {runs[0].session_ms}`: detection took "
        f"{statistics.median(detection):.2f} s (the session timeout, {session_s:.0f} s, from "
        "the victim's last heartbeat, then the survivor's next heartbeat), the rebalance "
        f"another {statistics.median(rebalance):.2f} s: tansu holds the join that follows the "
        "expiry before it assigns, as it holds a new group's first join. The group "
        f"protocol's share was {group:.2f} s ({group / session_s:.1f} session timeouts); the "
        "daemon's, from its assignment to the moved job's first call (restore included), "
        f"{statistics.median(daemon):.2f} s of the {total:.2f} s. A Kafka coordinator "
        "completes the join once the live members have rejoined (within a heartbeat "
        "interval); that broker is not measured here.",
        "",
    ]


def _failover_medians(runs: list[KillRun]) -> list[str]:
    label = _session_label(runs[0])
    parts = []
    for part in PARTS:
        values = [v for r in runs if (v := r.parts[part]) is not None]
        parts.append(f"{part} {_spread(values)}")
    return [
        f"- {label}: kill to first call **{_spread([r.first_call_s for r in runs])}**, "
        f"kill to `job.resumed` {_spread([r.resumed_s for r in runs])}; " + "; ".join(parts) + "."
    ]


def restore_section(result: RestoreResult) -> list[str]:
    lines = [
        "## 2. Restore time and changelog bytes read",
        "",
        "One requests partition (so one changelog partition). A daemon runs tiny jobs "
        "(ARCH, DB, VERIFY; a zero-latency model, `jobs.max_concurrent = 50`) until the "
        "partition holds the next size of finished jobs, and stops (SIGTERM); a daemon on "
        "a fresh store starts, is assigned the partition and restores it (then it runs the "
        "next jobs, and the next fresh daemon restores from it). Restore: the daemon's own "
        "figure from its log line. Read: the changelog partition as it was before the new "
        "claim, read with a plain consumer (every record ever written: within "
        "`changelog_min_compaction_lag_ms`, an hour by default, nothing is compacted, and "
        "tansu does not compact); bytes are keys plus values (section 7.4 names the metrics "
        "`codegend_restore_seconds` and `codegend_changelog_bytes_total`; the daemon has "
        "neither, so the log line and a reader of the topic stand in). Longest /healthz answer: "
        "the benchmark asks the new daemon's `/healthz` every 20 ms from its ready file to "
        "the end of its restore; the daemon answers on its event loop, so this is the "
        "longest stretch the loop was busy at once, and the group heartbeats waited as long.",
        "",
    ]
    rows = []
    for run in result.runs:
        per_job = run.seconds / run.jobs * 1000
        rate = run.bytes / MB / run.seconds if run.seconds else float("nan")
        rows.append(
            [
                f"{run.jobs:,}",
                f"{run.restored_jobs:,}",
                f"{run.records:,}",
                f"{run.bytes / MB:.2f} MB",
                f"{run.bytes / run.jobs / KB:.1f} KB",
                f"**{run.seconds:.2f} s**",
                f"{per_job:.1f} ms",
                f"{rate:.1f} MB/s",
                f"{run.stall_s:.2f} s",
                f"{result.build_s.get(run.jobs, float('nan')):.1f} s",
            ]
        )
    header = [
        "finished jobs",
        "restored (daemon's count)",
        "records read",
        "bytes read",
        "per job",
        "restore",
        "restore per job",
        "read rate",
        "longest /healthz answer",
        "daemon time to run the last batch",
    ]
    lines += _table(header, rows) + [""]
    lines += _errors(result.errors)
    lines += _stall_note(result)
    lines += [
        "The restore is in the failover's path (section 1's restore part) for the partition "
        "a dead daemon held: it grows with the finished jobs the partition retains "
        "(`store.retention_days`, 30 by default) until compaction keeps only their latest "
        "records. The daemon reads the partition to its end before its claim, keeps the "
        "latest value of each key, then imports one job at a time.",
        "",
    ]
    return lines


def _stall_note(result: RestoreResult) -> list[str]:
    """How many retained jobs would hold the event loop for a default session timeout."""
    from bench.failover import DEFAULT_SESSION_MS

    biggest = max(result.runs, key=lambda r: r.jobs, default=None)
    if biggest is None or biggest.stall_s <= 0:
        return []
    per_job_ms = 1000 * biggest.stall_s / biggest.jobs
    jobs = DEFAULT_SESSION_MS / per_job_ms
    return [
        f"At {biggest.jobs:,} jobs the loop was held for {biggest.stall_s:.2f} s at a stretch "
        f"(about {per_job_ms:.1f} ms per retained job): the import runs on the event loop "
        "in one go, and the group heartbeats with it. At that rate a partition of about "
        f"{round(jobs, -2):,.0f} retained finished jobs would keep them away for a whole "
        f"default session timeout ({DEFAULT_SESSION_MS / 1000:.0f} s), long enough for the "
        "coordinator to count the restoring daemon dead mid-restore (an extrapolation, not "
        "measured here).",
        "",
    ]


def bytes_section(result: BytesResult) -> list[str]:
    from bench.failover import DEMO, KindBytes

    lines = [
        "## 3. Changelog bytes per job (the demo job)",
        "",
        f"The demo job (`examples/{DEMO}.json`, its cassette `examples/cassettes/{DEMO}/` "
        "replayed: `llm.provider = replay`, the toolchain tier off) on one daemon in cluster "
        "mode. Its records, read back from the changelog partition with a plain consumer "
        "once the partition stopped growing (it runs while section 1's first cluster waits for "
        "its group's first join: a count of bytes, nothing of the failover is measured "
        "then): **written** is every record of the job (key "
        "plus value bytes), **kept** the latest record of each key that is not a tombstone "
        "(what compaction keeps). The design's estimate is section 1.4's table.",
        "",
    ]
    if result.error:
        return lines + _errors([result.error]) + [""]
    lines.append(
        f"Job `{result.job_id}`: {result.status}, {result.files} files, "
        f"{result.wall_s:.1f} s from submit to `job.completed`."
    )
    lines.append("")
    rows = []
    for kind in DESIGN_KB:
        got = result.kinds.get(kind) or KindBytes()
        design_kept, design_written = DESIGN_KB[kind]
        rows.append(
            [
                KIND_NAMES[kind],
                f"{got.records}",
                _kb(got.written),
                _kb(got.same),
                f"{got.kept_records}",
                _kb(got.kept),
                f"{design_kept:g} / {design_written:g} KB",
            ]
        )
    records = sum(k.records for k in result.kinds.values())
    kept_records = sum(k.kept_records for k in result.kinds.values())
    rows.append(
        [
            "**total**",
            f"{records}",
            f"**{_kb(result.written)}**",
            _kb(result.same),
            f"{kept_records}",
            f"**{_kb(result.kept)}**",
            f"{DESIGN_TOTAL_KB[0]:g} / {DESIGN_TOTAL_KB[1]:g} KB",
        ]
    )
    header = [
        "part",
        "records written",
        "bytes written",
        "of which the key's previous value again",
        "records kept",
        "bytes kept",
        "design: kept / written",
    ]
    lines += _table(header, rows) + [""]
    kept_ratio = result.kept / KB / DESIGN_TOTAL_KB[0]
    written_ratio = result.written / KB / DESIGN_TOTAL_KB[1]
    files = result.kinds.get("file") or KindBytes()
    event, event_bytes = result.largest_event
    lines += [
        f"Measured / estimated: kept **{kept_ratio:.2f}**, written **{written_ratio:.2f}**.",
        "",
        f"- The files: {_kb(files.same)} of the {_kb(files.written)} of file records "
        f"({files.same / max(result.written, 1):.0%} of all the job wrote) repeat the "
        "key's previous value. A file is sent when its phase stages it (complete while the "
        "answer streams) and again after the phase commits, which marks every file of the "
        "phase again, unchanged ones included; when the stage and the commit fall in one "
        "relay pass the file goes once, so this part varies from run to run.",
        f"- The events: each is written once and tombstoned once published; the largest, "
        f"{event or 'none'} ({_kb(event_bytes)}), carries the architecture and the file "
        "plan (the `J/plan` record's content again). Section 1.4 counted 0.5 KB an event.",
        "- `J` and `J/plan` are written at each relay pass that has a change for them: a "
        "replayed job runs its phases and ARCH's seven calls back to back, so passes "
        "coalesce and these counts are a floor; against a live model, with seconds between "
        "calls, expect more writes (section 1.4: ~40 of `J`, up to 8 of the plan).",
        "",
    ]
    return lines


def throughput_section(result: ThroughputResult) -> list[str]:
    from bench.failover import PHASES_PER_JOB

    lines = [
        "## 4. Throughput with 1, 2 and 3 daemons",
        "",
        f"The same 12 keyed jobs (four per requests partition, {PHASES_PER_JOB} phases), "
        f"model latency {result.latency_s:.2f} s per call, "
        f"`jobs.max_concurrent = {result.max_concurrent}` per daemon. One group: three daemons (after a warm-up job on each), "
        "then two (one stopped with SIGTERM and left), then one (each batch after the group "
        "settled and the moved partitions were restored); wall time from the first submit "
        "to the last `job.completed`. Ideal: the busiest daemon's jobs over its slots "
        "(rounded up), times the model calls of a job (the server's request log; VERIFY "
        "calls the model only to repair) at the model latency each.",
        "",
    ]
    rows = []
    base = result.runs[0].per_min if result.runs else float("nan")
    for run in result.runs:
        ideal = result.ideal_s(run)
        rows.append(
            [
                str(run.daemons),
                " + ".join(str(n) for n in run.jobs_per_daemon),
                f"{run.calls / run.jobs:.1f}",
                f"{run.wall_s:.2f} s",
                f"**{run.per_min:.1f}**",
                f"**{run.per_min / base:.2f}x**",
                f"{ideal:.2f} s",
                f"{run.wall_s / ideal:.2f}x",
                _statuses(run.statuses),
            ]
        )
    header = [
        "daemons",
        "jobs per daemon",
        "calls per job",
        "wall",
        "jobs/min",
        "vs 1 daemon",
        "ideal wall",
        "wall / ideal",
        "jobs",
    ]
    lines += _table(header, rows) + [""]
    lines += _errors(result.errors)
    lines += [
        "Scaling comes from waiting on the model in parallel: each daemon has its own "
        "`jobs.max_concurrent` slots, and a job's time is mostly model latency, so more "
        "daemons run more jobs at once (the machine has two cores, shared by the daemons, "
        "the broker and this process; what a phase costs besides its call, intake and the "
        "events' way to the client weigh more the shorter the latency). A requests partition is the unit of work: with three partitions two "
        "daemons split them two and one, so the busier one holds eight jobs of twelve and "
        "the ideal gain is 1.5x, not 2x; three daemons hold four each (3x).",
        "",
    ]
    return lines


def cost_section(result: CostResult) -> list[str]:
    from bench.failover import PHASES_PER_JOB

    lines = [
        "## 5. The cost of cluster mode on one daemon",
        "",
        f"Two daemons side by side, one with `kafka.changelog_topic` set (cluster mode), one "
        f'with `kafka.changelog_topic = ""` (off); one job at a time ({PHASES_PER_JOB} '
        f"phases, model latency {result.latency_s:.1f} s per call), alternating between "
        "them after a warm-up job each; wall time from `Client.submit` to the client "
        "receiving `job.completed`. Daemon CPU: utime + stime over the measured jobs; idle "
        "CPU: over 2 s with no job afterwards, in percent of one core.",
        "",
    ]
    rows = []
    for mode in ("on", "off"):
        runs = result.runs_s.get(mode, [])
        jobs = len(runs) or 1
        rows.append(
            [
                "on" if mode == "on" else 'off (`""`)',
                ", ".join(f"{s:.2f}" for s in runs),
                f"**{result.median_s(mode):.2f} s**",
                f"{1000 * result.cpu_s.get(mode, float('nan')) / jobs:.0f} ms",
                f"{100 * result.idle_cpu.get(mode, float('nan')):.1f}%",
                _statuses(result.statuses.get(mode)),
            ]
        )
    lines += _table(
        ["changelog", "runs (s)", "median", "daemon CPU per job", "idle CPU", "jobs"], rows
    )
    lines += [""]
    lines += _errors(result.errors)
    if result.runs_s.get("on") and result.runs_s.get("off"):
        ratio = result.median_s("on") / result.median_s("off")
        extra = (result.median_s("on") - result.median_s("off")) / PHASES_PER_JOB
        lines += [
            f"On / off: **{ratio:.2f}** ({1000 * extra:+.0f} ms per phase). In cluster mode "
            "a relay pass sends the changelog records of what was committed and waits until "
            "the partition's tail reader has read them back before it publishes the events "
            "(docs/cluster-design.md sections 1.3 and 3.2): each phase's events wait one "
            "round trip to the broker and one tail fetch more.",
            "",
        ]
    return lines


def render(results: Results) -> str:
    when = results.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "quick run" if results.quick else "full run"
    lines = [
        "# Cluster mode: failover, restore, changelog bytes, scaling",
        "",
        f"{when}, `{results.command}` ({kind}, {results.duration_s:.0f} s). Written by the "
        "benchmark itself (docs/cluster-design.md section 7.4); every comparison below was "
        "measured side by side in that run, on a machine shared with other work (test runs "
        f"among it; load average {results.load} when the run started): compare ratios, "
        "not seconds, across runs.",
        "",
        "Real `codegend run` processes in cluster mode (`kafka.changelog_topic` set; a "
        "changelog and commands topic of their own per cluster), each with its own store and "
        "output folder, on a tansu broker the benchmark starts (`daemon.broker.EmbeddedBroker`"
        ', 127.0.0.1, in-memory; not `bootstrap_servers = "embedded"`, which has no '
        "cluster mode). The local Messages API server (`tests.support.messages_server`) "
        "runs in the benchmark's process: its request log says when each model call "
        "arrived and, from the prompt's `Project: <name>` line, for which job. A job runs "
        "ARCH, DB, BE_CORE, BE_MODELS, BE_ROUTES and VERIFY (one model call each but VERIFY, "
        "which calls it only to repair what its checks find), three files of "
        "about 300 characters per file phase, unless a section says otherwise. The "
        "failover is measured with the product's defaults (`kafka.session_timeout_ms = "
        "10000`, `heartbeat_interval_ms = 3000`); the other scenarios start and stop "
        "daemons often and use a 2 s session (tansu holds each join for about a session "
        "timeout), which none of their figures depends on.",
        "",
        *_table(["machine", ""], [[k, v] for k, v in results.machine]),
        "",
        "Time per scenario: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results.durations_s.items())
        + (
            " (the demo job of section 3 runs within the failover's time)."
            if results.bytes and "failover" in results.durations_s
            else "."
        ),
        "",
        "## Summary",
        "",
        *_table(["figure", "value"], summary_rows(results)),
        "",
    ]
    if results.failover:
        lines += failover_section(results.failover)
    if results.restore:
        lines += restore_section(results.restore)
    if results.bytes:
        lines += bytes_section(results.bytes)
    if results.throughput:
        lines += throughput_section(results.throughput)
    if results.cost:
        lines += cost_section(results.cost)
    return "\n".join(lines).rstrip() + "\n"
