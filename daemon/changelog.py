"""The changelog's records: built at send time from a job's current rows, and applied back
into a store (a restore). Keys and values are those of docs/cluster-design.md section 1.2:
``J`` the job's state (or, once the job is pruned, its pruned marker), ``J/request``,
``J/plan``, ``J/phase/NAME``, ``J/file/PATH`` and ``J/event/SEQ``; and a partition's
``~commands``, how far its remote commands were applied (marked ``~commands/P``: a mark's
key is unique across partitions). Each value is JSON with ``"v": 1``; None is a tombstone
(the row is gone, the event published)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from daemon.contents import contents_left_out
from daemon.contract import GenerationRequest, PhaseCompletedEvent, Verification, parse_event
from daemon.states import ArchPlan
from daemon.store import Store
from daemon.store.partitions import COMMANDS_KEY, commands_mark_partition
from daemon.store.replica import PHASE_RESULT, VERIFYING_PHASE
from daemon.store.schema import USAGE_COLUMNS

log = logging.getLogger(__name__)

VERSION = 1
PRUNED = "PRUNED"  # the state of a pruned job's marker
CONTENTS_FROM_FILES = "files"  # an event record whose file contents are in the file records
DEATH = ("death_call", "death_stage", "death_chars", "death_files")
# The order a restore applies the latest records in: a job's files before its events.
KINDS = ("state", "request", "plan", "phase", "file", "event")
NAMED_KINDS = frozenset({"phase", "file", "event"})

Json = dict[str, Any]


class Key(NamedTuple):
    job_id: str
    kind: str
    name: str = ""


def parse_key(key: str) -> Key:
    """A job's key: its job id, the kind of part (``state`` for the bare job id) and the
    part's name (a phase, a path, a seq). ValueError for any other key."""
    job_id, slash, rest = key.partition("/")
    kind, _, name = rest.partition("/") if slash else ("state", "", "")
    if (
        not job_id
        or job_id.startswith("~")
        or kind not in KINDS
        or (kind in NAMED_KINDS) != bool(name)
    ):
        raise ValueError(f"not a job's changelog key: {key!r}")
    return Key(job_id, kind, name)


def record_key(mark: str) -> str:
    """The key of the record a mark's key names: the key itself, but ``~commands`` for a
    partition's ``~commands/P``."""
    return COMMANDS_KEY if commands_mark_partition(mark) is not None else mark


def build(store: Store, key: str) -> bytes | None:
    """The record of ``key`` (a mark's key) from the store's current rows; None for a
    tombstone."""
    partition = commands_mark_partition(key)
    if partition is not None:
        return _dumped({"offset": store.commands_offset(partition)})
    parsed = parse_key(key)
    value = BUILDERS[parsed.kind](store, parsed)
    return None if value is None else _dumped(value)


def _dumped(value: Json) -> bytes:
    return json.dumps({"v": VERSION, **value}, ensure_ascii=False, separators=(",", ":")).encode()


def commands_offset(value: bytes | None) -> int | None:
    """The offset a ``~commands`` record holds; None for a value that holds none."""
    try:
        offset = json.loads(value or b"")["offset"]
    except (ValueError, TypeError, KeyError):
        return None
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else None


def apply(store: Store, key: str, value: bytes | None) -> None:
    """Write the record of ``key`` into the store (a tombstone removes what it names)."""
    parsed = parse_key(key)
    APPLIERS[parsed.kind](store, parsed, None if value is None else json.loads(value))


def apply_all(store: Store, records: Iterable[tuple[str, bytes | None]]) -> None:
    """Records in changelog order: the latest of each key wins; applied kind by kind (in
    changelog order within a kind), so each event finds its job's files."""
    latest: dict[str, bytes | None] = {}
    for key, value in records:
        latest.pop(key, None)
        latest[key] = value
    for key in sorted(latest, key=lambda k: KINDS.index(parse_key(k).kind)):
        apply(store, key, latest[key])


# -- the job's state


def _build_state(store: Store, key: Key) -> Json | None:
    row = store.job_state_row(key.job_id)
    if row is None:
        pruned_at = store.pruned_at(key.job_id)
        if pruned_at is None:
            return None
        last_seq = store.last_seq(key.job_id)
        return {"job_id": key.job_id, "state": PRUNED, "pruned_at": pruned_at, "last_seq": last_seq}
    planned = json.loads(row["planned"])
    phases = sorted(row.pop("phases").items(), key=lambda item: planned.index(item[0]))
    return {
        "job_id": key.job_id,
        **row,
        "planned": planned,
        "cancel_requested": bool(row["cancel_requested"]),
        "phases": {name: _phase_state(columns) for name, columns in phases},
    }


def _phase_state(columns: Json) -> Json:
    death = [columns.pop(name) for name in DEATH]
    return {**columns, "death": None if death[0] is None else death}


def _apply_state(store: Store, key: Key, value: Json | None) -> None:
    if value is None:
        return  # never written: a job's state key ends as its pruned marker
    if value["state"] == PRUNED:
        store.import_pruned(key.job_id, value["pruned_at"], value["last_seq"])
        return
    job = {
        **value,
        "planned": json.dumps(value["planned"]),
        "cancel_requested": int(value["cancel_requested"]),
    }
    phases = {name: _phase_columns(state) for name, state in value["phases"].items()}
    store.import_job_state(key.job_id, job, phases)


def _phase_columns(state: Json) -> Json:
    death = state["death"] or [None] * len(DEATH)
    return {**state, **dict(zip(DEATH, death, strict=True))}


# -- the request and the plan


def _build_request(store: Store, key: Key) -> Json | None:
    row = store.request_row(key.job_id)
    if row is None or row["request"] is None:
        return None
    return {**row, "request": json.loads(row["request"])}


def _apply_request(store: Store, key: Key, value: Json | None) -> None:
    if value is None:
        return  # the job was pruned: its marker deletes its rows
    request = GenerationRequest.model_validate(value["request"]).model_dump_json()
    store.import_request(key.job_id, request, value["source"], value["created_at"])


def _build_plan(store: Store, key: Key) -> Json | None:
    plan = store.plan_json(key.job_id)
    return None if plan is None else {"plan": json.loads(plan)}


def _apply_plan(store: Store, key: Key, value: Json | None) -> None:
    plan = None if value is None else ArchPlan.model_validate(value["plan"]).model_dump_json()
    store.import_plan(key.job_id, plan)


# -- phases and files


def _build_phase(store: Store, key: Key) -> Json | None:
    row = store.phase_row(key.job_id, key.name)
    if row is None:
        return None
    usage = {name: row.pop(name) for name in USAGE_COLUMNS}
    record: Json = {"phase": key.name, **row, "usage": usage}
    record["warnings"] = _loaded(row["warnings"])
    if key.name == VERIFYING_PHASE:
        record["verification"] = _loaded(row["verification"])
    return record


def _apply_phase(store: Store, key: Key, value: Json | None) -> None:
    if value is None:
        store.import_phase(key.job_id, key.name, None)
        return
    result = {**value, **value["usage"]}
    result["warnings"] = None if value["warnings"] is None else json.dumps(value["warnings"])
    verification = value.get("verification")
    if verification is not None:
        verification = Verification.model_validate(verification).model_dump_json()
    store.import_phase(
        key.job_id, key.name, {**{n: result[n] for n in PHASE_RESULT}, "verification": verification}
    )


def _loaded(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _build_file(store: Store, key: Key) -> Json | None:
    return store.file_row(key.job_id, key.name)


def _apply_file(store: Store, key: Key, value: Json | None) -> None:
    store.import_file(key.job_id, key.name, value)


# -- events


def _build_event(store: Store, key: Key) -> Json | None:
    row = store.unpublished_event_row(key.job_id, int(key.name))
    if row is None:
        return None
    payload = json.loads(row.pop("payload"))
    record: Json = {**row, "seq": int(key.name), "payload": payload}
    files = payload.get("files") or []
    if row["type"] == "phase.completed" and any(file["content"] for file in files):
        payload["files"] = [{**file, "content": ""} for file in files]
        record["contents"] = CONTENTS_FROM_FILES
    return record


def _apply_event(store: Store, key: Key, value: Json | None) -> None:
    if value is None:
        store.import_event(key.job_id, int(key.name), None)
        return
    event = parse_event(json.dumps(value["payload"]))
    if value.get("contents") == CONTENTS_FROM_FILES and isinstance(event, PhaseCompletedEvent):
        event = _refilled(store, event)
    row = {"event_id": value["event_id"], "type": value["type"], "payload": event.to_json()}
    store.import_event(key.job_id, int(key.name), row)


def _refilled(store: Store, event: PhaseCompletedEvent) -> PhaseCompletedEvent:
    """The event with its files' contents put back from the job's files; without them
    (the relay's smaller form) when a file was rewritten since."""
    files = {file.path: file for file in store.files(event.job_id)}
    filled = []
    for file in event.files:
        found = files.get(file.path)
        if found is None or found.sha256 != file.sha256:
            was = f"{file.path} was rewritten before the event was published"
            note, smaller = contents_left_out(
                event, was, f"`codegend export {event.job_id} DIR` writes the files"
            )
            log.warning("%s", note, extra={"job_id": event.job_id})
            return smaller
        filled.append(found)
    return event.model_copy(update={"files": filled})


BUILDERS: dict[str, Callable[[Store, Key], Json | None]] = {
    "state": _build_state,
    "request": _build_request,
    "plan": _build_plan,
    "phase": _build_phase,
    "file": _build_file,
    "event": _build_event,
}
APPLIERS: dict[str, Callable[[Store, Key, Json | None], None]] = {
    "state": _apply_state,
    "request": _apply_request,
    "plan": _apply_plan,
    "phase": _apply_phase,
    "file": _apply_file,
    "event": _apply_event,
}
