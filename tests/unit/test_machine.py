import pytest
from transitions import MachineError

from daemon.machine import PHASE_TRANSITIONS, JobMachine, PhaseMachine, phase_sources
from daemon.states import PHASE_NAMES, JobState, PhaseStatus

COMPLETED, FAILED, RUNNING = PhaseStatus.COMPLETED, PhaseStatus.FAILED, PhaseStatus.RUNNING


def finish(machine: JobMachine, name: str, failed: bool = False) -> None:
    machine.fire(name, "start")
    machine.phase_done(name, failed=failed)


def walk_sequentially(machine: JobMachine, fail: str | None = None) -> list[str]:
    visited = []
    machine.settle()
    while not machine.finished:
        visited.append(machine.state)
        finish(machine, machine.state, failed=machine.state == fail)
        machine.settle()
    visited.append(machine.state)
    return visited


def test_walks_every_phase_in_order_to_completed():
    machine = JobMachine(PHASE_NAMES, JobState.PENDING)
    assert walk_sequentially(machine) == [*PHASE_NAMES, "COMPLETED"]
    machine.release()


def test_a_failed_phase_goes_on_and_ends_partial():
    machine = JobMachine(["ARCH", "DB", "CONFIG"], JobState.DB, {"ARCH": COMPLETED})
    assert walk_sequentially(machine, fail="DB") == ["DB", "CONFIG", "PARTIAL"]
    assert machine.failed_phases == ["DB"]


def test_fail_and_cancel_are_terminal():
    machine = JobMachine(["ARCH", "DB"], JobState.ARCH)
    machine.fail()
    assert machine.current is JobState.FAILED
    with pytest.raises(MachineError):
        machine.fail()
    other = JobMachine(["ARCH", "DB"], JobState.DB, {"ARCH": COMPLETED})
    other.cancel()
    assert other.current is JobState.CANCELLED


def test_restored_at_stored_state_skips_unplanned_and_done_phases():
    machine = JobMachine(["ARCH", "FE_SETUP", "CONFIG"], JobState.FE_SETUP, {"ARCH": COMPLETED})
    finish(machine, "FE_SETUP")
    machine.settle()
    assert machine.state == "CONFIG"
    statuses = {"ARCH": COMPLETED, "DB": FAILED, "BE_CORE": COMPLETED, "BE_MODELS": RUNNING}
    resumed = JobMachine(PHASE_NAMES, JobState.DB, statuses)
    resumed.settle()
    assert resumed.state == "BE_MODELS"
    assert resumed.running() == ["BE_MODELS"] and resumed.failed_phases == ["DB"]


def test_parallel_readiness_follows_needs():
    machine = JobMachine(PHASE_NAMES, JobState.PENDING)
    machine.settle()
    assert machine.ready() == ["ARCH"]
    finish(machine, "ARCH")
    machine.settle()
    assert machine.ready() == ["DB", "BE_CORE", "FE_SETUP"]
    finish(machine, "BE_CORE")  # finished before DB, which is the frontier
    machine.settle()
    assert machine.state == "DB"
    assert machine.ready(running=["DB", "FE_SETUP"]) == ["BE_UTILS"]
    for name in ("DB", "FE_SETUP", "FE_CORE"):
        finish(machine, name)
    machine.settle()
    assert machine.state == "BE_MODELS"
    assert machine.ready() == ["BE_MODELS", "BE_UTILS", "FE_PAGES", "FE_COMPONENTS"]
    for name in PHASE_NAMES[:-2]:
        if name not in machine.done:
            finish(machine, name)
    assert machine.ready() == ["CONFIG"]  # CONFIG needs every file phase
    finish(machine, "CONFIG")
    assert machine.ready() == ["VERIFY"]  # and VERIFY everything


def test_the_critical_path_is_five_phases_then_verify():
    machine = JobMachine(PHASE_NAMES, JobState.PENDING)
    waves = []
    while ready := machine.ready():
        waves.append(ready)
        for name in ready:
            finish(machine, name)
    assert len(waves) == 6  # ARCH | DB BE_CORE FE_SETUP | ... | CONFIG | VERIFY
    assert waves[0] == ["ARCH"] and waves[-2:] == [["CONFIG"], ["VERIFY"]]


def test_phase_lifecycle():
    phase = PhaseMachine("DB")
    phase.trigger("start")
    phase.trigger("interrupt")
    phase.trigger("start")
    phase.trigger("crash")  # found running at start: its process died in it
    phase.trigger("start")
    phase.trigger("complete")
    assert phase.status is COMPLETED
    with pytest.raises(MachineError):
        phase.trigger("start")
    with pytest.raises(AttributeError):
        phase.trigger("start_again")
    phase.release()


def test_a_running_phase_cannot_start_again_it_crashes_first():
    phase = PhaseMachine("DB", RUNNING)
    with pytest.raises(MachineError):
        phase.trigger("start")
    phase.trigger("crash")
    phase.trigger("start")
    assert phase.status is RUNNING
    phase.release()


def test_every_status_is_reachable_and_every_trigger_has_sources():
    reached = {t.dest for t in PHASE_TRANSITIONS} | {PhaseStatus.PENDING}
    assert reached == set(PhaseStatus)
    for trigger in {t.trigger for t in PHASE_TRANSITIONS}:
        assert phase_sources(trigger)
    with pytest.raises(KeyError):
        phase_sources("start_again")


def test_reopen_runs_the_unfinished_phases_and_verify_again():
    statuses = {"ARCH": COMPLETED, "DB": FAILED, "CONFIG": COMPLETED, "VERIFY": COMPLETED}
    machine = JobMachine(["ARCH", "DB", "CONFIG", "VERIFY"], JobState.PARTIAL, statuses)
    assert machine.reopen() == ["DB", "VERIFY"]
    assert machine.current is JobState.DB
    assert machine.status("VERIFY") is PhaseStatus.PENDING and machine.status("CONFIG") is COMPLETED
    assert machine.failed_phases == [] and machine.done == {"ARCH", "CONFIG"}
    machine.release()


def test_reopen_of_a_completed_job_moves_nothing():
    statuses = dict.fromkeys(["ARCH", "VERIFY"], COMPLETED)
    machine = JobMachine(["ARCH", "VERIFY"], JobState.COMPLETED, statuses)
    assert machine.reopen() == []
    assert machine.current is JobState.COMPLETED
    machine.release()


def test_a_completed_phase_other_than_verify_is_not_reopened():
    phase = PhaseMachine("DB", COMPLETED)
    assert not phase.trigger("reopen")  # the only move from completed is VERIFY's
    assert phase.status is COMPLETED
    verify = PhaseMachine("VERIFY", COMPLETED)
    verify.trigger("reopen")
    assert verify.status is PhaseStatus.PENDING
    phase.release()
    verify.release()


def test_released_phase_machines_are_reused_at_the_status_asked_for():
    job = JobMachine(["ARCH", "DB"], JobState.DB, {"ARCH": COMPLETED, "DB": FAILED})
    reused = job.phases["DB"]
    job.release()
    again = JobMachine(["ARCH", "BE_CORE"], JobState.BE_CORE, {"ARCH": COMPLETED})
    assert reused in again.phases.values()  # taken back from the pool, not built anew
    assert {n: p.status for n, p in again.phases.items()} == {
        "ARCH": COMPLETED,
        "BE_CORE": PhaseStatus.PENDING,
    }
    assert again.done == {"ARCH"} and again.failed_phases == []
    again.fire("BE_CORE", "start")
    again.phase_done("BE_CORE", failed=True)
    assert again.failed_phases == ["BE_CORE"] and job.failed_phases == ["DB"]
    again.release()
