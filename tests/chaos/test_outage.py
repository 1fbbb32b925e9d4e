"""The broker unreachable for several seconds mid-run: phases go on, their events wait in
the outbox, and when the broker is back the backlog drains; nothing is lost."""

from __future__ import annotations

import time

from tests.support.processes import wait_for

CUT_S = 5.0


def test_a_broker_outage_loses_nothing(make_chaos, proxied_broker):
    servers, proxy = proxied_broker
    chaos = make_chaos(bootstrap=servers, chunk_delay_s=0.01)
    chaos.submit(3)
    process = chaos.start()
    wait_for(lambda: chaos.completed_phases() >= 3 and len(chaos.states()) == 3, 60)

    proxy.cut()
    done, backlog = chaos.completed_phases(), chaos.backlog()
    time.sleep(CUT_S)
    assert process.poll() is None, chaos.log_tail()
    assert chaos.completed_phases() > done  # the daemon went on running phases
    grown = chaos.backlog()
    assert grown > backlog  # and their events waited in the outbox
    proxy.restore()
    chaos.submit(1)  # and intake takes requests again

    wait_for(chaos.all_done, 90)  # every job done, the backlog drained
    assert process.poll() is None, chaos.log_tail()
    assert chaos.stop(process) == 0
    figures = chaos.check()
    print(f"\noutage of {CUT_S:.0f} s: outbox backlog {backlog} -> {grown}, drained\n")
    print(figures.summary())
