import pytest
from transitions import MachineError

from daemon.machine import JobMachine, PhaseMachine
from daemon.states import PHASE_NAMES, JobState


def finish(machine: JobMachine, name: str, failed: bool = False) -> None:
    machine.start_phase(name)
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
    machine = JobMachine(["ARCH", "DB", "CONFIG"], JobState.DB, {"ARCH": "completed"})
    assert walk_sequentially(machine, fail="DB") == ["DB", "CONFIG", "PARTIAL"]
    assert machine.failed_phases == ["DB"]


def test_fail_and_cancel_are_terminal():
    machine = JobMachine(["ARCH", "DB"], JobState.ARCH)
    machine.fail()
    assert machine.current is JobState.FAILED
    with pytest.raises(MachineError):
        machine.fail()
    other = JobMachine(["ARCH", "DB"], JobState.DB, {"ARCH": "completed"})
    other.cancel()
    assert other.current is JobState.CANCELLED


def test_restored_at_stored_state_skips_unplanned_and_done_phases():
    machine = JobMachine(["ARCH", "FE_SETUP", "CONFIG"], JobState.FE_SETUP, {"ARCH": "completed"})
    finish(machine, "FE_SETUP")
    machine.settle()
    assert machine.state == "CONFIG"
    statuses = {"ARCH": "completed", "DB": "failed", "BE_CORE": "completed", "BE_MODELS": "running"}
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
    phase.start()
    phase.interrupt()
    phase.start()
    phase.start()  # found running at start: its process died in it
    phase.complete()
    assert phase.state == "completed"
    with pytest.raises(MachineError):
        phase.start()
    phase.release()


def test_released_phase_machines_are_reused_at_the_state_asked_for():
    first = PhaseMachine.acquire("DB", "completed")
    first.release()
    again = PhaseMachine.acquire("BE_CORE", "interrupted")
    assert again is first and (again.phase, again.state) == ("BE_CORE", "interrupted")
    again.start()
    assert again.state == "running"
    other = PhaseMachine.acquire("FE_CORE")  # while `again` is held: another machine
    assert other is not again and other.state == "pending"
    again.release()
    other.release()
