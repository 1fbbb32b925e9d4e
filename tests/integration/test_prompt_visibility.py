"""What a phase is shown before it writes: every file it imports from another phase, by
path and by name, is in its own request, written yet or not.

The demo cassette is replayed through the real daemon and the real SDK against the local
Messages server, each answer served by its phase and call number; then every import that
crosses phases in the final project is looked up in the request of the call that wrote the
importing file. The file plan in the shared prefix is what makes that hold: with the plan
taken out of the same requests, imports of files that later phases (or phases running side
by side) write are blind.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.answers import interpret_files
from daemon.client import Client
from daemon.contract import GenerationRequest
from daemon.llm import LLMAnswer, cassette_entry_name
from daemon.outputs import output_folder
from daemon.states import FILE_PHASE_NAMES
from daemon.verify.resolve import cross_imports
from tests.support.daemons import collect, running
from tests.support.messages_server import Reply, extract_phase, request_text

ROOT = Path(__file__).parents[2]
CASSETTE = ROOT / "examples" / "cassettes" / "car-management-app"
SAMPLE_REQUEST = ROOT / "examples" / "car-management-app.json"
JOB_ID = "prompt-visibility"
DEMO_FILES = 89
# Without the plan, at least this share of the cross-phase imports must be blind: the
# check can fail, and the plan is what passes it.
MIN_BLIND_WITHOUT_PLAN = 0.25
# The parts of a request that exist because of the file plan (the plan itself in the
# shared prefix; the phase's planned files and the written interfaces they import).
PLAN_BLOCK = "File plan:"
PLAN_PARTS = ("Your files, as the file plan gives them", "Written files your files import")


@dataclass(frozen=True)
class Served:
    """One request and the cassette answer it got."""

    phase: str
    call: int
    body: dict[str, Any]
    entry: dict[str, Any] | None


class CassetteResponder:
    """Answers each request with the cassette entry of its phase and call number (a
    phase's calls are sequential, so the n-th request of a phase is its call n); a call
    the cassette has no answer for is refused, and the job fails."""

    def __init__(self, cassette: Path) -> None:
        self._cassette = cassette
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}
        self.served: list[Served] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        phase = extract_phase(body) or "?"
        with self._lock:
            call = self._calls[phase] = self._calls.get(phase, 0) + 1
            path = self._cassette / cassette_entry_name(phase, call)
            entry = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            self.served.append(Served(phase, call, body, entry))
        if entry is None:
            return Reply(status=400, error_type="invalid_request_error")
        response = entry["response"]
        return Reply(text=response["text"], stop_reason=response["stop_reason"])


def written_by_call(served: list[Served]) -> dict[str, Served]:
    """The call whose answer wrote each file (the last one, should two write it)."""
    writers: dict[str, Served] = {}
    for item in served:
        if item.phase in FILE_PHASE_NAMES and item.entry is not None:
            response = item.entry["response"]
            answer = LLMAnswer(response["text"], response["stop_reason"])
            writers.update((new.path, item) for new in interpret_files(answer).files)
    return writers


def without_plan(body: dict[str, Any]) -> str:
    """The request's text as it was before the file plan: the plan's block of the shared
    prefix and the plan's parts of the phase's own block taken out."""
    kept = []
    for message in body["messages"]:
        for block in message["content"]:
            text = block.get("text", "") if block.get("type") == "text" else ""
            if text.startswith(PLAN_BLOCK):
                continue
            parts = text.split("\n\n")
            kept.append("\n\n".join(p for p in parts if not p.startswith(PLAN_PARTS)))
    system = [b.get("text", "") for b in body.get("system") or []]
    return "\n".join([*system, *kept])


def names_in(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", text) is not None


def blind_imports(
    files: Mapping[str, str], writers: Mapping[str, Served], texts: Mapping[int, str]
) -> tuple[int, list[str]]:
    """(cross-phase imports, those whose path or a name is not in the request of the call
    that wrote the importing file); ``texts``: each request's text by ``id`` of its body."""
    total, blind = 0, []
    for ref in cross_imports(files):
        writer, target = writers[ref.importer], writers[ref.target]
        if writer.phase == target.phase:
            continue
        total += 1
        text = texts[id(writer.body)]
        missing = [n for n in ref.names if n not in ("default", "*") and not names_in(n, text)]
        if ref.target not in text or missing:
            shown = f" {', '.join(missing)}" if missing else ""
            blind.append(
                f"{ref.importer}:{ref.line} ({writer.phase}.{writer.call:02d}) "
                f"-> {ref.target}{shown} ({target.phase})"
            )
    return total, blind


async def test_every_cross_phase_import_is_in_the_request_that_wrote_it(
    make_settings, messages_server
):
    responder = CassetteResponder(CASSETTE)
    messages_server.responder = responder
    settings = make_settings()
    request = GenerationRequest.model_validate(
        {**json.loads(SAMPLE_REQUEST.read_text(encoding="utf-8")), "request_id": JOB_ID}
    )
    async with running(settings):
        async with Client(settings) as client:
            assert await client.submit(request) == JOB_ID
        events = await collect(settings, JOB_ID)
    refused = [f"{s.phase}.{s.call:02d}" for s in responder.served if s.entry is None]
    assert not refused, f"calls the cassette has no answer for: {refused}"
    assert events[-1].type == "job.completed" and events[-1].status == "completed", events[-1]
    assert events[-1].files_total == DEMO_FILES
    for item in responder.served:  # the requests are the ones the cassette answers
        assert item.body["max_tokens"] == item.entry["request"]["max_tokens"], item.phase
    assert sum(s.phase == "ARCH" for s in responder.served) == len(
        list(CASSETTE.glob("ARCH.[0-9][0-9].json"))
    )

    out = settings.output.dir / output_folder(JOB_ID)
    files = {
        str(p.relative_to(out)): p.read_text(encoding="utf-8")
        for p in out.rglob("*")
        if p.is_file()
    }
    writers = written_by_call(responder.served)
    assert sorted(writers) == sorted(files)

    with_plan = {id(s.body): request_text(s.body) for s in responder.served}
    total, blind = blind_imports(files, writers, with_plan)
    summary = f"{total} cross-phase imports, {len(blind)} blind"
    assert total > 100 and not blind, summary + ":\n" + "\n".join(blind)

    # The same check over the same requests without their plan: it does fail.
    stripped = {id(s.body): without_plan(s.body) for s in responder.served}
    assert not [t for t in stripped.values() if PLAN_BLOCK in t or any(p in t for p in PLAN_PARTS)]
    total_before, blind_before = blind_imports(files, writers, stripped)
    assert total_before == total
    assert len(blind_before) >= MIN_BLIND_WITHOUT_PLAN * total, (
        f"without the plan: {total} cross-phase imports, {len(blind_before)} blind"
    )
    print(f"{settings.jobs.execution}: {summary}; without the plan {len(blind_before)} blind")
