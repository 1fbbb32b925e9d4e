"""Reading the model's answers, and folding each into the phase that asked for it.

A files answer holds complete files; an ARCH answer the architecture (its first answer
only) and entries of the file plan. An answer cut at ``max_tokens`` keeps every complete
file (or planned file) and the next call asks only for the rest; one that added nothing
at all doubles the phase's per-call budget, up to ``llm.max_tokens_ceiling``. A broken
answer (invalid JSON, schema errors, unsafe paths, paths that clash with the job's other
files, refusals) becomes errors precise enough for the model to fix, fed back with the
next call at most ``llm.max_repairs`` times. An answer that adds no file and does not
finish the phase is said to the model; after ``MAX_STALLS`` in a row the phase ends with
what it has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import from_json

from daemon.contract import field_errors
from daemon.errors import PhaseFailed, UnsafePath
from daemon.llm import LLMAnswer
from daemon.paths import PathIndex, check_path
from daemon.records import NewFile
from daemon.settings import LLMSettings
from daemon.states import FILE_PHASE_NAMES, ArchPlan
from daemon.states.base import ArchAnswer, FilePlanMore, GeneratedFile, PhaseFiles, PlannedFile
from daemon.streaming import FileScanner

if TYPE_CHECKING:
    from daemon.generation import PhaseRun

log = logging.getLogger(__name__)

CUT_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded"})
# Answers in a row that add no file and do not finish the phase, each followed by a call
# that says so; the next one ends the phase with what it has.
MAX_STALLS = 2
MAX_PLANNED_FILES = 400  # entries of a file plan kept (as many as a manifest lists)


@dataclass
class Interpretation:
    """What one answer contributed: complete files, whether the phase is done, what was wrong."""

    files: list[NewFile] = field(default_factory=list)
    plan: ArchPlan | None = None  # the architecture (ARCH's first answer)
    planned: list[PlannedFile] = field(default_factory=list)  # entries of the file plan
    done: bool = False
    cut: bool = False
    errors: list[str] = field(default_factory=list)


def interpret_files(answer: LLMAnswer, known: PathIndex | None = None) -> Interpretation:
    """What a files answer holds, whatever its text: the errors of a broken one say what is
    wrong precisely enough for the model to fix it (a lone surrogate, absurd nesting)."""
    if answer.stop_reason == "refusal":
        return Interpretation(errors=["the answer was a refusal; produce the files as asked"])
    errors: list[str] = []
    if answer.stop_reason in CUT_STOP_REASONS:
        files = _safe(recover_files(answer.text), errors, known)
        return Interpretation(files=files, cut=True, errors=errors)
    try:
        # The standard parser, then the model: pydantic's own JSON parser refuses a lone
        # surrogate with a bare "invalid JSON", where GeneratedFile names the file and place.
        parsed = PhaseFiles.model_validate(json.loads(answer.text))
    except ValidationError as exc:
        return Interpretation(errors=[_validation_summary(exc)])
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return Interpretation(errors=[f"the answer is not valid JSON: {exc.msg} ({where})"])
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return Interpretation(errors=[f"the answer is not valid JSON: {reason}"[:300]])
    files = _safe(parsed.files, errors, known)
    return Interpretation(files=files, done=parsed.complete and not errors, errors=errors)


def recover_files(text: str) -> list[GeneratedFile]:
    """The complete files of a cut answer. Incomplete strings are dropped by the partial
    parser, so a file object missing its path or content was the one being written. Text
    the partial parser refuses (invalid Unicode, absurd nesting) is read by the streaming
    scanner instead, which keeps every file object that closed and is valid."""
    try:
        partial = from_json(text, allow_partial=True) if text.strip() else {}
    except (ValueError, TypeError, RecursionError):  # TypeError: text that is not Unicode
        return _scanned(text)
    items = partial.get("files", []) if isinstance(partial, dict) else []
    recovered = []
    for item in items if isinstance(items, list) else []:
        try:
            recovered.append(GeneratedFile.model_validate(item))
        except ValidationError:
            break
    return recovered


def _scanned(text: str) -> list[GeneratedFile]:
    files = FileScanner().feed(text)
    return list({file.path: file for file in files}.values())


def _safe(
    files: Sequence[GeneratedFile], errors: list[str], known: PathIndex | None = None
) -> list[NewFile]:
    """The files whose paths are safe and fit with the job's other paths (``known``)."""
    index = known if known is not None else PathIndex()
    safe = []
    for item in files:
        try:
            safe.append(NewFile(index.admit(check_path(item.path)), item.content))
        except UnsafePath as exc:
            errors.append(f"{exc}; use a relative POSIX path inside the project")
    return safe


def interpret_plan(answer: LLMAnswer, first: bool = True) -> Interpretation:
    """What an ARCH answer holds: the architecture (its ``first`` answer only) and entries
    of the file plan. A cut answer keeps the architecture if it closed and every planned
    file before the one being written; the next call asks for the rest of the plan."""
    if answer.stop_reason == "refusal":
        return Interpretation(errors=["the answer was a refusal; produce the plan as asked"])
    if answer.stop_reason in CUT_STOP_REASONS:
        return _cut_plan(answer.text, first)
    model: type[ArchAnswer | FilePlanMore] = ArchAnswer if first else FilePlanMore
    try:
        parsed = model.model_validate_json(answer.text)
    except ValidationError as exc:
        return Interpretation(errors=[_validation_summary(exc)])
    errors: list[str] = []
    planned = _planned_entries(parsed.files, errors)
    plan = _architecture(parsed.model_dump()) if isinstance(parsed, ArchAnswer) else None
    return Interpretation(
        plan=plan, planned=planned, done=parsed.complete and not errors, errors=errors
    )


def _cut_plan(text: str, first: bool) -> Interpretation:
    try:
        partial = from_json(text, allow_partial=True) if text.strip() else {}
    except (ValueError, TypeError, RecursionError):
        return Interpretation(cut=True)
    if not isinstance(partial, dict):
        return Interpretation(cut=True)
    plan = None
    # The file list follows the architecture: once it began, the architecture had closed.
    if first and ("files" not in partial or (plan := _architecture(partial)) is None):
        return Interpretation(cut=True)
    items = partial.get("files")
    # The last entry may have been cut inside its final list and still look whole.
    entries = items[:-1] if isinstance(items, list) else []
    valid = []
    for item in entries:
        try:
            valid.append(PlannedFile.model_validate(item))
        except ValidationError:
            break
    return Interpretation(plan=plan, planned=_planned_entries(valid, []), cut=True)


def _architecture(fields: dict[str, Any]) -> ArchPlan | None:
    try:
        return ArchPlan.model_validate(
            {k: v for k, v in fields.items() if k not in ("files", "complete")}
        )
    except ValidationError:
        return None


def _planned_entries(entries: Sequence[PlannedFile], errors: list[str]) -> list[PlannedFile]:
    """The entries of a file plan that name a file phase and a safe path."""
    kept = []
    for entry in entries:
        if entry.phase not in FILE_PHASE_NAMES:
            errors.append(
                f"planned file {entry.path!r} names phase {entry.phase!r}; the phases that "
                f"write files are {', '.join(FILE_PHASE_NAMES)}"
            )
            continue
        try:
            kept.append(entry.model_copy(update={"path": check_path(entry.path)}))
        except UnsafePath as exc:
            errors.append(f"planned file: {exc}; use a relative POSIX path inside the project")
    return kept


def _validation_summary(exc: ValidationError) -> str:
    return "the answer is not valid JSON for the schema: " + "; ".join(
        field_errors(exc, "answer", limit=5)
    )


def interpret(
    run: PhaseRun, answer: LLMAnswer, before: dict[str, NewFile], redo: set[str]
) -> tuple[Interpretation, list[str]]:
    """What ``answer`` holds for its phase, and what it adds: the paths of files the phase
    did not have as they are ``before`` the call or had sent back for a fix (``redo``),
    or of planned files it did not have (and the architecture, on its first answer)."""
    if run.phase.produces_files:
        result = interpret_files(answer, run.paths)
        added = [f.path for f in result.files if before.get(f.path) != f or f.path in redo]
    else:
        result = interpret_plan(answer, first=run.plan is None)
        added = [e.path for e in result.planned if run.planned.get(e.path) != e]
        added += ["(architecture)"] if run.plan is None and result.plan else []
    return result, added


def report_continuation(run: PhaseRun, result: Interpretation) -> None:
    extra = {"job_id": run.job.job_id, "phase": run.phase.name, "layout": "indented"}
    files = run.phase.produces_files
    kept = len(result.files) if files else len(result.planned)
    what = "complete files" if files else "planned files"
    if result.errors:
        log.warning("answer rejected (%s); asking again", "; ".join(result.errors), extra=extra)
    elif result.cut:
        log.info(
            "answer cut at max_tokens: kept %d %s, asking for the rest (max_tokens %d)",
            kept,
            what,
            run.budget,
            extra=extra,
        )
    elif run.stalls:
        log.warning(
            "the answer added no new file without finishing the phase (%d in a row); "
            "asking for the missing files or complete: true",
            run.stalls,
            extra=extra,
        )
    else:
        so_far = len(run.produced) if files else len(run.planned)
        log.info(
            "%d %s so far; asking for the rest",
            so_far,
            "files" if files else "planned files",
            extra=extra,
        )


def absorb(
    run: PhaseRun, result: Interpretation, added: Sequence[str], limits: LLMSettings
) -> bool:
    """Fold one answer into the phase; True when the phase is finished. ``added``: the
    paths of the answer's files that the phase did not have as they are."""
    phase = run.phase
    for new in result.files:
        run.produced[new.path] = new
        run.redo.discard(new.path)
    run.plan = result.plan or run.plan
    for entry in result.planned:
        run.planned[entry.path] = entry
    if (result.plan or result.planned) and (plan := with_file_plan(run)) is not None:
        run.hooks.checkpoint_plan(plan)
    repeated_errors = bool(result.errors) and result.errors == run.feedback[: len(result.errors)]
    run.feedback = list(result.errors)
    if result.errors:
        run.repairs += 1
        if run.repairs > limits.max_repairs:
            raise PhaseFailed(
                f"{phase.name}: still invalid after {limits.max_repairs} repairs: "
                + "; ".join(result.errors)
            )
        if repeated_errors:  # never the same request twice: say it is the same problem
            run.feedback.append(
                f"This is the same problem as in your answer before (repair {run.repairs} "
                f"of {limits.max_repairs}): fix it this time."
            )
    if result.done:
        return True
    if result.cut and not (result.files or result.planned or result.plan):
        if run.budget >= limits.max_tokens_ceiling:
            raise PhaseFailed(
                f"{phase.name}: one answer does not fit in max_tokens={run.budget} "
                f"(llm.max_tokens_ceiling)"
            )
        run.budget = min(run.budget * 2, limits.max_tokens_ceiling)
        return False
    if added or result.errors:
        run.stalls = 0
        return False
    return _stalled(run, [f.path for f in result.files] + [e.path for e in result.planned])


def _stalled(run: PhaseRun, repeated: Sequence[str]) -> bool:
    """An answer that added no file and did not finish the phase (it repeated files,
    or listed none). Asking the same again would get the same answer: the next call
    names what happened and asks for the missing files or for ``complete: true``;
    after MAX_STALLS such answers in a row the phase ends with the files it has."""
    run.stalls += 1
    phase = run.phase.name
    if run.stalls > MAX_STALLS:
        note = (
            f"{phase}: the model answered 'not complete' {run.stalls} times in a row "
            f"without a new file; the phase ends with the {len(run.produced)} files it has"
        )
        log.warning(
            "%s", note, extra={"job_id": run.job.job_id, "phase": phase, "layout": "indented"}
        )
        run.notes.append(note)
        return True
    files = "files" if run.phase.produces_files else "planned files"
    what = (
        f"it repeated {files} this phase already has (" + ", ".join(repeated[:20]) + ")"
        if repeated
        else "its file list was empty"
    )
    listed = "already produced" if run.phase.produces_files else "already planned"
    run.feedback = [
        ("Again, your" if run.stalls > 1 else "Your")
        + f" previous answer added no new file and said complete is false: {what}. Send "
        f"only {files} this phase still needs and that are not listed as {listed}. "
        'If the phase needs no more files, answer {"files": [], "complete": true}.'
    ]
    return False


def with_file_plan(run: PhaseRun) -> ArchPlan | None:
    if run.plan is None:
        return None
    return run.plan.model_copy(update={"files": list(run.planned.values())[:MAX_PLANNED_FILES]})


def take_streamed(item: GeneratedFile, run: PhaseRun) -> NewFile | None:
    """A file that closed mid-stream: keep it, and return it if it is to be committed
    (unsafe or conflicting paths wait for the whole answer, whose interpretation reports
    them)."""
    try:
        new = NewFile(run.paths.admit(check_path(item.path)), item.content)
    except UnsafePath:
        return None
    run.redo.discard(new.path)
    if run.produced.get(new.path) == new:
        return None
    run.produced[new.path] = new
    return new
