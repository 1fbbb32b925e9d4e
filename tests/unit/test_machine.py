import pytest
from transitions import MachineError

from daemon.machine import JobMachine
from daemon.states import PHASE_NAMES, JobState


def test_walks_every_phase_in_order_to_completed():
    machine = JobMachine(PHASE_NAMES, JobState.PENDING)
    visited = []
    while not machine.finished:
        machine.advance()
        visited.append(machine.state)
    assert visited == [*PHASE_NAMES, "COMPLETED"]


def test_a_failed_phase_goes_on_and_ends_partial():
    machine = JobMachine(["ARCH", "DB", "CONFIG"], JobState.DB)
    machine.phase_failed("DB")
    machine.advance()
    assert machine.state == "CONFIG"
    machine.advance()
    assert machine.current is JobState.PARTIAL


def test_fail_and_cancel_are_terminal():
    machine = JobMachine(["ARCH", "DB"], JobState.ARCH)
    machine.fail()
    assert machine.current is JobState.FAILED
    with pytest.raises(MachineError):
        machine.advance()
    other = JobMachine(["ARCH", "DB"], JobState.DB)
    other.cancel()
    assert other.current is JobState.CANCELLED


def test_restored_at_stored_state_and_skips_unplanned_phases():
    machine = JobMachine(["ARCH", "FE_SETUP", "CONFIG"], JobState.FE_SETUP)
    machine.advance()
    assert machine.state == "CONFIG"
