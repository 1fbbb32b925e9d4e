"""A job as the store holds it, in a form two stores can be compared by: every column of
its row, its phases and files, its seq counter, its unpublished events and its pruned id.
Left out: what the changelog does not carry (model calls, published events, when an event
was written) and the order of the files' rows (a restore writes them in changelog order)."""

from __future__ import annotations

from typing import Any

from daemon.store import Store

QUERIES = {
    "job": "SELECT * FROM jobs WHERE job_id = ?",
    "phases": "SELECT * FROM phases WHERE job_id = ? ORDER BY phase",
    "files": "SELECT * FROM files WHERE job_id = ? ORDER BY path",
    "sequence": "SELECT * FROM sequences WHERE job_id = ?",
    "unpublished": "SELECT event_id, job_id, seq, type, payload FROM outbox "
    "WHERE job_id = ? AND published_at IS NULL ORDER BY seq",
    "pruned": "SELECT * FROM pruned_jobs WHERE job_id = ?",
}


def canonical_dump(store: Store, job_id: str) -> dict[str, list[dict[str, Any]]]:
    dump = {}
    for part, query in QUERIES.items():
        cursor = store.db.conn.execute(query, (job_id,))
        names = [column[0] for column in cursor.description]
        dump[part] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return dump
