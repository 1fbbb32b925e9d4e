"""Conformance of a phase's files to the file plan (daemon.verify.conformance)."""

from daemon.checks import CheckLimits, run_checks
from daemon.verify.conformance import defined_names, plan_problems

PLANNED = [
    ("frontend/src/components/CarCard.tsx", "a car's card", (("CarCard", "({car}: Props)"),)),
    ("frontend/src/components/index.ts", "the barrel", (("CarCard", "re-export"),)),
    ("backend/app/deps.py", "dependencies", (("get_db", "def get_db() -> Session"),)),
]


def test_files_that_follow_the_plan_have_no_problem():
    written = {
        "frontend/src/components/CarCard.tsx": "export function CarCard() { return null }\n",
        "frontend/src/components/index.ts": "export { CarCard } from './CarCard';\n",
        "backend/app/deps.py": "def get_db():\n    yield 1\n",
    }
    assert plan_problems("FE_COMPONENTS", PLANNED, written) == []


def test_a_missing_file_a_renamed_export_and_an_extra_file_are_each_named():
    written = {
        "frontend/src/components/CarCard.tsx": "export const CarTile = () => null;\n",
        "backend/app/deps.py": "def get_session():\n    yield 1\n",
        "frontend/src/components/Other.tsx": "export default 1;\n",
    }
    problems = {(p.path, p.kind): p.message for p in plan_problems("X", PLANNED, written)}
    assert "'CarCard'" in problems[("frontend/src/components/CarCard.tsx", "plan")]
    assert "not written" in problems[("frontend/src/components/index.ts", "plan")]
    assert "'get_db'" in problems[("backend/app/deps.py", "plan")]
    extra = problems[("frontend/src/components/Other.tsx", "unplanned")]
    assert "not one of X's planned files" in extra and "CarCard.tsx" in extra


def test_a_module_that_may_define_anything_satisfies_every_export():
    assert defined_names("a.py", "from x import *\n") is None
    assert defined_names("a.ts", "export * from 'pkg';\n") is None
    assert defined_names("a.css", "body {}") is None
    assert (
        defined_names("a.py", "def (:\n") == frozenset()
    )  # the syntax error is reported elsewhere
    assert defined_names("a.tsx", "export default function App() {}\n") >= {"default"}


def test_a_phase_without_planned_files_is_not_checked():
    assert plan_problems("CONFIG", [], {"README.md": "x"}) == []


async def test_the_daemon_runs_the_check_in_a_worker_with_the_size_cap_passed_last():

    written = {"frontend/src/components/CarCard.tsx": "export const CarTile = () => null;\n"}
    problems = await run_checks("check_plan", CheckLimits(), "X", PLANNED, written)

    assert {p.kind for p in problems} == {"plan"}, [p.text for p in problems]
    assert len(problems) == 3  # CarCard's export, and two files not written
