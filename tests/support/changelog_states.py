"""Store states for the changelog's tests: a plan and a verification to commit, and jobs
taken to the points where each store writer can run."""

from __future__ import annotations

from daemon.contract import Usage, Verification
from daemon.records import NewFile, PhaseOutcome
from daemon.states import ArchPlan, JobState
from daemon.store import Store
from tests.support.store_records import sample_request

SOURCE = "codegen.requests:3:17"  # a job of requests partition 3
LISTS = (
    "pages",
    "components",
    "endpoints",
    "tables",
    "dependencies_backend",
    "dependencies_frontend",
)
PLAN = ArchPlan.model_validate(
    {
        "summary": "s",
        "backend_package": "app",
        **{name: [] for name in LISTS},
        "files": [
            {"path": "db/schema.sql", "phase": "DB", "purpose": "t", "exports": [], "imports": []}
        ],
    }
)
VERIFICATION = Verification(
    tiers=["static"],
    problems_before=2,
    problems_after=1,
    rounds=1,
    repair_calls=1,
    remaining=["db/schema.sql: one problem left"],
)
USAGE = Usage(input_tokens=100, output_tokens=50, calls=1, cost_usd=0.25)


def created(store: Store, job_id: str = "j1", planned: tuple[str, ...] = ("ARCH", "DB")) -> None:
    store.create_job(job_id, sample_request(job_id), SOURCE, list(planned))


def arch_running(store: Store, job_id: str = "j1") -> None:
    created(store, job_id)
    store.start_phase(store.job(job_id), "ARCH", "1", JobState.ARCH)


def arch_done(store: Store, job_id: str = "j1") -> None:
    """ARCH committed with its plan and a file, DB not started."""
    arch_running(store, job_id)
    outcome = PhaseOutcome(
        "ARCH", "1", files=[NewFile("README.md", "# p\n")], plan=PLAN, usage=USAGE, duration_s=2.5
    )
    store.complete_phase(store.job(job_id), outcome, JobState.DB)


def db_running(store: Store, job_id: str = "j1") -> None:
    arch_done(store, job_id)
    store.start_phase(store.job(job_id), "DB", "2", JobState.DB)


def verified(store: Store, job_id: str = "j1") -> None:
    """Every phase of ARCH, DB, VERIFY done, VERIFY rewrote a file of DB: COMPLETED."""
    created(store, job_id, ("ARCH", "DB", "VERIFY"))
    job = store.job(job_id)
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    arch = PhaseOutcome("ARCH", "1", files=[NewFile("README.md", "# p\n")], plan=PLAN)
    store.complete_phase(job, arch, JobState.DB)
    store.start_phase(job, "DB", "2", JobState.DB)
    store.stage_files(job_id, "DB", [NewFile("db/schema.sql", "create table t (id int);\n")])
    db = PhaseOutcome("DB", "2", files=[NewFile("db/seed.sql", "insert into t values (1);\n")])
    store.complete_phase(job, db, JobState.VERIFY, ["a job warning"])
    store.start_phase(job, "VERIFY", "3", JobState.VERIFY)
    repaired = [NewFile("db/schema.sql", "create table t (id integer);\n")]
    verify = PhaseOutcome(
        "VERIFY", "3", files=repaired, usage=USAGE, warnings=["w"], verification=VERIFICATION
    )
    store.complete_phase(job, verify, JobState.COMPLETED)
