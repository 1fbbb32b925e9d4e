from datetime import UTC, datetime

from daemon.client import SeqOrder
from daemon.contract import Event
from tests.support.watch_events import make_event


def event(seq: int, job: str = "j", event_id: str | None = None) -> Event:
    return make_event(
        event_id=event_id or f"{job}-{seq}",
        type="job.resumed",
        job_id=job,
        request_id=None,
        seq=seq,
        ts=datetime.now(UTC),
        from_phase="DB",
        reason="x",
    )


def test_events_come_out_in_seq_order_once_each():
    order = SeqOrder()
    out = []
    for seq in [1, 2, 4, 5, 3, 4, 5, 2, 6]:  # 3 failed, was sent again after 4 and 5
        out += [e.seq for e in order.take(event(seq))]
    assert out == [1, 2, 3, 4, 5, 6]


def test_jobs_are_ordered_apart():
    order = SeqOrder()
    assert [e.seq for e in order.take(event(2, "a"))] == []
    assert [e.seq for e in order.take(event(1, "b"))] == [1]
    assert [(e.job_id, e.seq) for e in order.take(event(1, "a"))] == [("a", 1), ("a", 2)]
