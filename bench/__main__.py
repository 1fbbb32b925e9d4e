"""``python -m bench [--quick] [--only SCENARIOS] ...``: run the scenarios, print the
figures as ratios against their goals, write RESULTS.md, the plot and the profile."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report, scenarios
from bench.harness import Bench
from bench.procs import ROOT

SCENARIOS = ("latency", "throughput", "overhead", "memory", "crash")
log = logging.getLogger("bench")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes (about a minute); writes to bench/.runs/quick",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--modes", help="comma-separated execution modes (default: sequential,parallel)"
    )
    parser.add_argument("--jobs", type=int, help="jobs of the throughput and overhead batches")
    parser.add_argument("--memory-jobs", type=int, help="jobs submitted in the memory scenario")
    parser.add_argument("--latency-ms", type=float, help="model latency L per call (default 200)")
    parser.add_argument("--out", type=Path, help="folder for RESULTS.md, the plot and the profile")
    parser.add_argument(
        "--bootstrap", help="host:port of a broker to use instead of an embedded tansu"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (stores, logs)"
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> scenarios.Sizes:
    sizes = scenarios.Sizes.quick() if args.quick else scenarios.Sizes()
    changes: dict[str, object] = {}
    if args.modes:
        changes["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if args.jobs:
        changes["throughput_jobs"] = changes["overhead_jobs"] = args.jobs
    if args.memory_jobs:
        changes["memory_jobs"] = args.memory_jobs
    if args.latency_ms is not None:
        changes["latency_s"] = args.latency_ms / 1000
    return dataclasses.replace(sizes, **changes)  # type: ignore[arg-type]


async def run(args: argparse.Namespace, out: Path) -> report.Results:
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; allowed: {', '.join(SCENARIOS)}")
    sizes = sizes_from(args)
    command = "python -m bench " + shlex.join(sys.argv[1:])
    results = report.Results(datetime.now(UTC), args.quick, command.strip())
    load = Path("/proc/loadavg").read_text().split()[:3]
    results.notes.append(
        f"Load average when the run started: {' '.join(load)} (1, 5, 15 min); the CPU "
        "tables name what other processes took during each batch."
    )
    started = time.monotonic()
    async with Bench(args.bootstrap, keep=args.keep) as bench:
        log.info("broker %s, scratch folder %s", bench.bootstrap, bench.root)
        if "latency" in only:
            results.latency = await scenarios.job_latency(bench, sizes)
        if "throughput" in only:
            results.throughput = await scenarios.throughput(bench, sizes)
        if "overhead" in only:
            results.overhead = await scenarios.overhead(bench, sizes, out / "profile.txt")
        if "memory" in only:
            results.memory = await scenarios.memory(bench, sizes)
        if "crash" in only:
            results.crash = await scenarios.crash_cost(bench, sizes)
        results.duration_s = time.monotonic() - started
        if results.throughput and report.plot(results.throughput, out / "jobs_over_time.png"):
            log.info("plot written to %s", out / "jobs_over_time.png")
        (out / "RESULTS.md").write_text(report.render(results, bench.root))
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("daemon").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    out = args.out or (ROOT / "bench" / ".runs" / "quick" if args.quick else ROOT / "bench")
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, out))
    print()
    for scenario, figure, goal, verdict in report.summary_rows(results):
        print(f"{scenario}: {figure.replace('**', '')} (goal {goal}) {verdict.replace('*', '')}")
    print(f"\nwritten: {out / 'RESULTS.md'} ({results.duration_s:.0f} s)")


if __name__ == "__main__":
    main()
