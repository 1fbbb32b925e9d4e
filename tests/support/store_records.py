"""Jobs and events written straight into a store, as a daemon would have left them, and
changed there: an event's payload grown to a size, a job's events marked published."""

from __future__ import annotations

from daemon.contract import GenerationRequest, parse_event
from daemon.records import NewFile, PhaseOutcome
from daemon.states import JobState
from daemon.store import Store

DAY_S = 86_400.0


def sample_request(job_id: str) -> GenerationRequest:
    """A text request for project ``p`` with ``job_id`` as its request id."""
    return GenerationRequest.model_validate(
        {"request_id": job_id, "project_name": "p", "mockup": {"kind": "text", "description": "d"}}
    )


def finished_job(store: Store, job_id: str, state: JobState = JobState.COMPLETED) -> None:
    """A one-phase job that ended ``state``: ARCH completed (or failed) with one file."""
    store.create_job(job_id, sample_request(job_id), "t", ["ARCH"])
    job = store.job(job_id)
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    outcome = PhaseOutcome("ARCH", "1", files=[NewFile("a.txt", "x" * 1000)])
    if state is JobState.COMPLETED:
        store.complete_phase(job, outcome, state)
    else:
        store.fail_phase(job, outcome, "boom", state)


def publish_job(store: Store, job_id: str, at: float) -> None:
    """Mark the job's events published at ``at`` and the job last changed then."""
    rows = [row.id for row in store.unpublished(10_000) if row.job_id == job_id]
    store.mark_published(rows)
    store.db.conn.execute("UPDATE outbox SET published_at = ? WHERE job_id = ?", (at, job_id))
    store.db.conn.execute("UPDATE jobs SET updated_at = ? WHERE job_id = ?", (at, job_id))


def job_with_four_events(
    store: Store, job_id: str, content: str = "x", error: str | None = None, source: str = "test"
) -> None:
    """A job with four events: accepted, ARCH started, ARCH completed (its file holds
    ``content``) or failed (with ``error``), DB started."""
    request = GenerationRequest.model_validate(
        {
            "request_id": job_id,
            "project_name": "shop",
            "mockup": {"kind": "text", "description": "x"},
        }
    )
    store.create_job(job_id, request, source, ["ARCH", "DB"])
    job = store.job(job_id)
    store.start_phase(job, "ARCH", "1", JobState.ARCH)
    outcome = PhaseOutcome(phase="ARCH", step="1", files=[NewFile("a.txt", content)])
    if error is None:
        store.complete_phase(job, outcome, JobState.DB)
    else:
        store.fail_phase(job, outcome, error, JobState.DB)
    store.start_phase(job, "DB", "2", JobState.DB)


def resize_event(store: Store, job_id: str, seq: int, size: int) -> None:
    """Make the file content of that event such that its payload is ``size`` bytes."""
    row_id, payload = store.db.conn.execute(
        "SELECT id, payload FROM outbox WHERE job_id = ? AND seq = ?", (job_id, seq)
    ).fetchone()
    event = parse_event(payload)
    file = event.files[0]
    grown = len(file.content) + size - len(payload)
    bigger = event.model_copy(update={"files": [file.model_copy(update={"content": "x" * grown})]})
    store.replace_payload(row_id, bigger.to_json())
    assert len(bigger.to_json()) == size
