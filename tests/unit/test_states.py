from daemon.states import PHASE_BY_NAME, PHASE_NAMES, PHASES, TERMINAL, JobState, plan_phases
from daemon.states.base import ArchPlan, PhaseFiles

GENERATION_BUDGETS = {
    "ARCH": 2000,
    "DB": 2000,
    "BE_CORE": 3000,
    "BE_MODELS": 4000,
    "BE_ROUTES": 5000,
    "BE_UTILS": 3000,
    "FE_SETUP": 3000,
    "FE_CORE": 4000,
    "FE_PAGES": 5000,
    "FE_COMPONENTS": 4000,
    "CONFIG": 2000,
}
# VERIFY, after the eleven phases that generate: the budget of each of its repair calls.
BUDGETS = {**GENERATION_BUDGETS, "VERIFY": 4000}


def test_phases_in_contract_order_with_their_budgets():
    assert tuple(BUDGETS) == PHASE_NAMES
    assert {p.name: p.max_tokens for p in PHASES} == BUDGETS


def test_steps_and_needs_match_the_contract():
    steps = {p.name: p.step for p in PHASES}
    assert steps == {
        "ARCH": "1",
        "DB": "2",
        "BE_CORE": "3.1",
        "BE_MODELS": "3.2",
        "BE_ROUTES": "3.3",
        "BE_UTILS": "3.4",
        "FE_SETUP": "4.1",
        "FE_CORE": "4.2",
        "FE_PAGES": "4.3",
        "FE_COMPONENTS": "4.4",
        "CONFIG": "5",
        "VERIFY": "6",
    }
    needs = {p.name: p.needs for p in PHASES}
    assert needs["ARCH"] == ()
    assert needs["BE_MODELS"] == ("DB", "BE_CORE")  # it imports the base and the session
    assert needs["FE_COMPONENTS"] == ("FE_CORE",)
    assert set(needs["CONFIG"]) == set(PHASE_NAMES) - {"CONFIG", "VERIFY"}
    assert set(needs["VERIFY"]) == set(PHASE_NAMES) - {"VERIFY"}
    # every phase needs only phases before it: the sequential order is a valid schedule
    for index, phase in enumerate(PHASES):
        assert set(phase.needs) <= set(PHASE_NAMES[:index])


def test_only_arch_is_critical_and_plans():
    assert [p.name for p in PHASES if p.critical] == ["ARCH"]
    assert issubclass(PHASE_BY_NAME["ARCH"].output_model, ArchPlan)
    assert all(p.output_model is PhaseFiles for p in PHASES[1:])


def test_job_states_hold_phases_and_terminals():
    assert [s.name for s in JobState][1:13] == list(PHASE_NAMES)
    assert {s.name for s in TERMINAL} == {"COMPLETED", "PARTIAL", "FAILED", "CANCELLED"}
    assert JobState.DB.phase is PHASE_BY_NAME["DB"]
    assert JobState.COMPLETED.phase is None


def test_plan_phases_keeps_order_and_always_arch():
    assert plan_phases(None) == list(PHASE_NAMES)
    assert plan_phases(["CONFIG", "DB"]) == ["ARCH", "DB", "CONFIG", "VERIFY"]
    assert plan_phases(["CONFIG", "DB"], verify=False) == ["ARCH", "DB", "CONFIG"]
    assert "VERIFY" not in plan_phases(None, verify=False)
