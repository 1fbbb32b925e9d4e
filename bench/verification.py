"""``python -m bench.verification``: what verifying a job costs.

For each example cassette under ``examples/cassettes/``: the static tier's time per job
(in this process, and through the check worker as the daemon runs it), the toolchain tier's
time with cold package caches and with warm ones (when node and npm are installed), and the
VERIFY state itself replayed from the cassette: problems before and after, repair rounds and
calls, and its duration. Figures are medians of ``--runs`` runs measured side by side in
this one run; the report goes to ``bench/VERIFICATION.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from daemon.answers import interpret_files, interpret_plan
from daemon.checks import CheckLimits, run_checks
from daemon.contract import GenerationRequest, Usage
from daemon.generation import PhaseHooks, PhaseRunner
from daemon.llm import LLMAnswer, ReplayProvider
from daemon.records import JobRecord
from daemon.settings import load_settings
from daemon.states import PHASE_BY_NAME, PHASE_NAMES, JobState
from daemon.states.base import ArchPlan
from daemon.verify import toolchain
from daemon.verify.static import static_problems

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "examples" / "cassettes"


def load_cassette(directory: Path) -> tuple[ArchPlan | None, dict[str, str], dict[str, str]]:
    """The plan, the files and each file's writer, as the file phases' answers give them
    (VERIFY's repair answers left out: they are what the replay of VERIFY calls for)."""
    entries = sorted(
        (json.loads(p.read_text()) for p in directory.glob("*.*.json")),
        key=lambda e: (PHASE_NAMES.index(e["phase"]), e["call"]),
    )
    plan, planned, files, writers = None, {}, {}, {}
    for entry in entries:
        response = entry["response"]
        answer = LLMAnswer(
            text=response["text"], stop_reason=response["stop_reason"], usage=Usage()
        )
        if entry["phase"] == "ARCH":
            result = interpret_plan(answer, first=plan is None)
            plan = result.plan or plan
            planned.update((e.path, e) for e in result.planned)
        elif entry["phase"] != "VERIFY":
            for new in interpret_files(answer).files:
                files[new.path], writers[new.path] = new.content, entry["phase"]
    if plan is not None:
        plan = plan.model_copy(update={"files": list(planned.values())})
    return plan, files, writers


def _median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _worker_s(files: dict[str, str], runs: int) -> float:
    limits = CheckLimits(60.0, 1024 * 1024)
    await run_checks("verify_static", limits, files)  # starts the worker
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await run_checks("verify_static", limits, files)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _replay_verify(directory: Path, plan: ArchPlan | None, files: dict[str, str], writers):
    request_file = ROOT / "examples" / f"{directory.name}.json"
    request = GenerationRequest.model_validate_json(request_file.read_text())
    job = JobRecord(
        job_id="bench",
        request_id=None,
        request=request,
        state=JobState.VERIFY,
        planned=list(PHASE_NAMES),
        plan=plan,
    )
    settings = load_settings(llm={"provider": "replay", "cassette_dir": directory})
    runner = PhaseRunner(ReplayProvider(directory), settings, asyncio.Semaphore(1))
    project = dict(files)
    hooks = PhaseHooks(job_files=lambda: dict(project))
    started = time.perf_counter()
    outcome = await runner.verify(job, PHASE_BY_NAME["VERIFY"], project, writers, [], hooks)
    return outcome.verification, time.perf_counter() - started


def _toolchain_s(
    files: dict[str, str], cache: Path, backend_package: str | None
) -> tuple[float, bool, int]:
    started = time.perf_counter()
    report = toolchain.run_toolchain(
        files, cache_dir=cache, timeout_s=900, memory_mb=4096, backend_package=backend_package
    )
    return time.perf_counter() - started, report.builds, len(report.problems)


async def main(runs: int, with_toolchain: bool) -> str:
    lines = [
        "# Verification: what it costs per job",
        "",
        f"`python -m bench.verification --runs {runs}`; medians of {runs} runs.",
        "",
        "| example | files | static tier (in process) | static tier (check worker) | problems before → after | rounds | repair calls | VERIFY replayed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    projects = {}
    for directory in sorted(p for p in CASSETTES.iterdir() if p.is_dir()):
        plan, files, writers = load_cassette(directory)
        in_process = _median_s(lambda files=files: static_problems(files), runs)
        worker = await _worker_s(files, runs)
        summary, verify_s = await _replay_verify(directory, plan, dict(files), writers)
        lines.append(
            f"| {directory.name} | {len(files)} | {in_process * 1000:.0f} ms | {worker * 1000:.0f} ms "
            f"| {summary.problems_before} → {summary.problems_after} | {summary.rounds} "
            f"| {summary.repair_calls} | {verify_s:.2f} s |"
        )
        projects[directory.name] = (plan, files)
    lines.append("")
    reason = toolchain.toolchain_available()
    if not with_toolchain or reason:
        lines.append(f"Toolchain tier not measured: {reason or 'asked not to (--no-toolchain)'}.")
        return "\n".join(lines) + "\n"
    lines += [
        "Toolchain tier (npm install, tsc, build; pip install, import, boot, GET routes) on each",
        "example as its answers wrote it, with empty package caches and then with warm ones:",
        "",
        "| example | cold | warm | cold / warm | builds | problems |",
        "|---|---|---|---|---|---|",
    ]
    for name, (plan, files) in projects.items():
        package = plan.backend_package if plan else None
        with tempfile.TemporaryDirectory(prefix="codegend-bench-cache-") as cache:
            cold, _, _ = await asyncio.to_thread(_toolchain_s, files, Path(cache), package)
            warm, builds, problems = await asyncio.to_thread(
                _toolchain_s, files, Path(cache), package
            )
        lines.append(
            f"| {name} | {cold:.1f} s | {warm:.1f} s | {cold / warm:.2f} | {builds} | {problems} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-toolchain", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(main(args.runs, not args.no_toolchain))
    (ROOT / "bench" / "VERIFICATION.md").write_text(report)
    print(report)
