"""Prompts: the shared prefix of a job's calls, and what each phase adds to it.

The order is chosen for the prompt cache: the system instructions, then the request and
the architecture plan (the same for every phase of a job, marked with ``cache_control``),
then what changes per phase: the manifest of earlier files and the phase's own task.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from daemon.contract import FileRecord, GenerationRequest, ImageMockup
from daemon.states import FILE_PHASE_NAMES, PHASE_BY_NAME, ArchPlan, Phase
from daemon.states.base import PlannedFile
from daemon.verify.interfaces import signatures
from daemon.verify.scripts import is_script, parse_script

if TYPE_CHECKING:
    from daemon.verification import Repair

MAX_MANIFEST_FILES = 400
MAX_EXPORTS_PER_FILE = 12
# Larger files are not read for their exports: parsing them on every later phase's prompt
# would cost more than naming their exports is worth (a file that fits one answer is far
# smaller at the default budgets).
MAX_EXPORTS_SOURCE_CHARS = 128 * 1024
# The file plan shown in every prompt of a job, with each export's signature; a longer plan
# is shown by path and export names only.
MAX_FILE_PLAN_CHARS = 80_000
# The real interfaces of written files that a phase's planned files import.
MAX_IMPORTED_CHARS = 40_000
_CACHE = {"type": "ephemeral"}

SYSTEM = """You are codegend, a senior full-stack engineer generating one slice of a complete, \
working project from a UI mockup. The project is built in phases; each answer covers exactly \
one phase and must be consistent with the architecture plan and with the files that earlier \
phases produced (import them by the paths and names the manifest lists).

Rules for every answer:
- Answer only with JSON matching the given schema.
- Paths are relative POSIX paths inside the project (e.g. backend/app/main.py): no leading /, \
no .., no backslashes, nothing under .git/.
- Every file is complete, real code: no placeholders, no "rest omitted" comments.
- Set "complete" to true when your answer finishes this phase's files. If the phase needs \
more files than fit in one answer, stop after whole files, set "complete" to false, and \
you will be asked for the rest."""


def system_blocks(cache: bool = True) -> list[dict[str, Any]]:
    block: dict[str, Any] = {"type": "text", "text": SYSTEM}
    return [{**block, "cache_control": _CACHE} if cache else block]


def request_blocks(
    request: GenerationRequest, plan: ArchPlan | None, cache: bool = True
) -> list[dict[str, Any]]:
    """The part of the user turn that every phase of the job shares; the last block is cached."""
    stack = request.stack
    intro = (
        f"Project: {request.project_name}\n"
        f"Stack: backend {stack.backend}, frontend {stack.frontend}, database {stack.database}\n"
    )
    mockup = request.mockup
    blocks: list[dict[str, Any]] = []
    if isinstance(mockup, ImageMockup):
        blocks.append({"type": "text", "text": intro + "The UI mockup is the image below."})
        blocks.append(
            {
                "type": "image",
                "source": {"type": "base64", "media_type": mockup.media_type, "data": mockup.data},
            }
        )
    else:
        blocks.append(
            {"type": "text", "text": intro + f"UI mockup description:\n{mockup.description}"}
        )
    if mockup.notes:
        blocks.append({"type": "text", "text": f"Notes on the mockup:\n{mockup.notes}"})
    if plan is not None:
        architecture = plan.model_dump_json(indent=1, exclude={"files"})
        blocks.append({"type": "text", "text": "Architecture plan:\n" + architecture})
        if plan.files:
            blocks.append({"type": "text", "text": render_file_plan(plan.files)})
    if cache:
        blocks[-1] = {**blocks[-1], "cache_control": _CACHE}
    return blocks


def phase_text(
    phase: Phase,
    manifest: Sequence[FileRecord],
    produced: Sequence[str],
    feedback: Sequence[str],
    plan: ArchPlan | None = None,
    written: Callable[[], Mapping[str, str]] | None = None,
) -> str:
    """The per-phase part: the manifest, the task, the phase's planned files and the real
    interfaces of the written files they import, and notes from earlier calls."""
    parts = []
    if manifest:
        parts.append(
            "Files produced by earlier phases (path: exports):\n" + render_manifest(manifest)
        )
    parts.append(f"PHASE: {phase.name}\nStep {phase.step}: {phase.title}\n\n{phase.instructions}")
    if not phase.produces_files:
        parts.append("The phases that write the files, in order:\n" + _file_phases())
    mine = plan.planned_for(phase.name) if plan is not None else []
    if mine:
        parts.append(
            "Your files, as the file plan gives them: write each of them, define every "
            "planned export with its planned name and signature, import other files by "
            "their planned paths and names, and write no other file:\n"
            + "\n".join(f"- {entry.path}: {entry.purpose}" for entry in mine)
        )
        if written is not None and (imported := render_imported(mine, written())):
            parts.append(imported)
    if produced:
        listed = "produced" if phase.produces_files else "planned"
        parts.append(
            f"Files of this phase already {listed} (do not repeat them; "
            f"{'write' if phase.produces_files else 'plan'} only the remaining ones):\n"
            + "\n".join(f"- {path}" for path in produced)
        )
    if feedback:
        parts.append(
            "Your previous answer was rejected:\n" + "\n".join(f"- {item}" for item in feedback)
        )
    return "\n\n".join(parts)


def build_messages(
    request: GenerationRequest,
    plan: ArchPlan | None,
    phase: Phase,
    manifest: Sequence[FileRecord],
    produced: Sequence[str],
    feedback: Sequence[str],
    cache: bool = True,
    written: Callable[[], Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """``written``: the job's files so far (read only if the phase's planned files import any)."""
    content = request_blocks(request, plan, cache)
    text = phase_text(phase, manifest, produced, feedback, plan, written)
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


# The failing files and the files they refer to, shown in a repair call.
MAX_REPAIR_CHARS = 60_000


def build_repair_messages(
    request: GenerationRequest,
    plan: ArchPlan | None,
    phase: Phase,
    repair: Repair,
    produced: Sequence[str],
    feedback: Sequence[str],
    cache: bool = True,
) -> list[dict[str, Any]]:
    """A VERIFY repair call: the shared prefix (request, architecture, file plan), then
    the writer's failing files, their errors and the files they refer to."""
    content = request_blocks(request, plan, cache)
    content.append({"type": "text", "text": repair_text(phase, repair, produced, feedback)})
    return [{"role": "user", "content": content}]


def repair_text(
    phase: Phase, repair: Repair, produced: Sequence[str], feedback: Sequence[str]
) -> str:
    writer = repair.writer
    parts = [
        f"PHASE: {phase.name}\nStep {phase.step}: {phase.title}\n\n{phase.instructions}",
        f"These files were written by phase {writer.name} ({writer.title}) and fail "
        "verification:\n" + "\n".join(f"- {problem.text}" for problem in repair.problems),
    ]
    budget = MAX_REPAIR_CHARS
    for title, files in (
        ("The failing files as they are now", repair.failing),
        ("The files they refer to, as they are", repair.referenced),
    ):
        shown, budget = _file_blocks(files, budget)
        if shown:
            parts.append(f"{title}:\n\n{shown}")
    parts.append(
        "Send each failing file again, fixed and complete, with complete set to true. You "
        "may also write a missing file the errors call for, at its planned path."
    )
    if produced:
        parts.append(
            "Files already sent again in this repair (do not repeat them):\n"
            + "\n".join(f"- {path}" for path in produced)
        )
    if feedback:
        parts.append(
            "Your previous answer was rejected:\n" + "\n".join(f"- {item}" for item in feedback)
        )
    return "\n\n".join(parts)


def _file_blocks(files: Mapping[str, str], budget: int) -> tuple[str, int]:
    blocks = []
    for path, content in files.items():
        if len(content) > budget:
            blocks.append(f"=== {path} === (not shown: over the size shown in one call)")
            continue
        blocks.append(f"=== {path} ===\n{content}")
        budget -= len(content)
    return "\n\n".join(blocks), budget


def _file_phases() -> str:
    return "\n".join(
        f"- {name} (step {PHASE_BY_NAME[name].step}): {PHASE_BY_NAME[name].title}"
        for name in FILE_PHASE_NAMES
    )


def render_file_plan(entries: Sequence[PlannedFile]) -> str:
    """The file plan as the prompts show it: each file's phase, purpose, imports and exports
    with their signatures; past MAX_FILE_PLAN_CHARS, paths and export names only."""
    head = (
        "File plan: every file of the project, the phase that writes it, and the names it "
        "exports. Files import each other by exactly these paths and names, written yet or "
        "not:\n"
    )
    full = head + "\n".join(_plan_entry(entry) for entry in entries)
    if len(full) <= MAX_FILE_PLAN_CHARS:
        return full
    short = "\n".join(
        f"{e.path} [{e.phase}]: {', '.join(x.name for x in e.exports)}" for e in entries
    )
    return (head + short)[:MAX_FILE_PLAN_CHARS]


def _plan_entry(entry: PlannedFile) -> str:
    lines = [f"{entry.path} [{entry.phase}]: {entry.purpose}"]
    if entry.imports:
        lines.append("  imports: " + ", ".join(entry.imports))
    lines += [f"  - {x.name} ({x.kind}): {x.signature}" for x in entry.exports]
    return "\n".join(lines)


def render_imported(mine: Sequence[PlannedFile], files: Mapping[str, str]) -> str:
    """The real interfaces of the written files that the phase's planned files import
    (files of other phases only), within MAX_IMPORTED_CHARS."""
    own = {entry.path for entry in mine}
    wanted = dict.fromkeys(path for e in mine for path in e.imports if path not in own)
    lines: list[str] = []
    size = 0
    for path in wanted:
        content = files.get(path)
        if content is None:
            continue
        block = f"{path}:\n" + "\n".join(f"  {line}" for line in interface_lines(path, content))
        if size + len(block) > MAX_IMPORTED_CHARS:
            lines.append("... and more written files; their planned interfaces are above")
            break
        lines.append(block)
        size += len(block)
    if not lines:
        return ""
    return "Written files your files import, as they are (their real interfaces):\n" + "\n".join(
        lines
    )


def interface_lines(path: str, content: str) -> list[str]:
    """What a written file offers, one line per export with its exact signature."""
    if len(content) > MAX_EXPORTS_SOURCE_CHARS:
        return ["(not read: too large)"]
    return signatures(path, content) or list(exports_of(path, content)) or ["(no exports)"]


def render_manifest(files: Sequence[FileRecord]) -> str:
    lines = []
    for record in files[:MAX_MANIFEST_FILES]:
        names = exports_of(record.path, record.content)[:MAX_EXPORTS_PER_FILE]
        lines.append(f"{record.path}: {', '.join(names)}" if names else record.path)
    if len(files) > MAX_MANIFEST_FILES:
        lines.append(f"... and {len(files) - MAX_MANIFEST_FILES} more files")
    return "\n".join(lines)


@functools.lru_cache(maxsize=4096)
def exports_of(path: str, content: str) -> tuple[str, ...]:
    """What a file offers to the files that import it (cached: each version is read once).

    Total and bounded, since every later prompt of the job lists it: a file the readers
    cannot make sense of (or one over ``MAX_EXPORTS_SOURCE_CHARS``) exports nothing."""
    if len(content) > MAX_EXPORTS_SOURCE_CHARS:
        return ()
    if path.endswith(".py"):
        return tuple(_python_exports(content))
    if is_script(path):
        return _script_exports(path, content)
    if path.endswith("package.json"):
        return _package_dependencies(content)
    return ()


def _script_exports(path: str, content: str) -> tuple[str, ...]:
    """What a TS/JS file exports, read the way the compiler reads it (tree-sitter), in the
    order the names are declared; ``default`` stands for a default export."""
    module = parse_script(path, content)
    names = sorted(module.exports | {r.name for r in module.reexports}, key=content.find)
    return tuple(names)


def _package_dependencies(content: str) -> tuple[str, ...]:
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        return ()
    dependencies = document.get("dependencies") if isinstance(document, dict) else None
    return tuple(sorted(map(str, dependencies))) if isinstance(dependencies, dict) else ()


def _python_exports(content: str) -> list[str]:
    try:
        tree = ast.parse(content)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # NUL, absurd nesting
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(
                t.id for t in node.targets if isinstance(t, ast.Name) and not t.id.startswith("_")
            )
    return names
