"""Prompts: the shared prefix of a job's calls, and what each phase adds to it.

The order is chosen for the prompt cache: the system instructions, then the request and
the architecture plan (the same for every phase of a job, marked with ``cache_control``),
then what changes per phase: the manifest of earlier files and the phase's own task.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Sequence
from typing import Any

from daemon.models import FileRecord, GenerationRequest, ImageMockup
from daemon.states import ArchPlan, Phase

MAX_MANIFEST_FILES = 400
MAX_EXPORTS_PER_FILE = 12
# Larger files are not read for their exports: parsing them on every later phase's prompt
# would cost more than naming their exports is worth (a file that fits one answer is far
# smaller at the default budgets).
MAX_EXPORTS_SOURCE_CHARS = 128 * 1024
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

_TS_EXPORT = re.compile(
    r"^export\s+(?:default\s+)?(?:async\s+)?(?:function|const|class|interface|type|enum|let)\s+(\w+)",
    re.MULTILINE,
)


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
        blocks.append(
            {"type": "text", "text": "Architecture plan:\n" + plan.model_dump_json(indent=1)}
        )
    if cache:
        blocks[-1] = {**blocks[-1], "cache_control": _CACHE}
    return blocks


def phase_text(
    phase: Phase,
    manifest: Sequence[FileRecord],
    produced: Sequence[str],
    feedback: Sequence[str],
) -> str:
    """The per-phase part: the manifest, the task, and notes from earlier calls of this phase."""
    parts = []
    if manifest:
        parts.append(
            "Files produced by earlier phases (path: exports):\n" + render_manifest(manifest)
        )
    parts.append(f"PHASE: {phase.state}\nStep {phase.step}: {phase.title}\n\n{phase.instructions}")
    if produced:
        parts.append(
            "Files of this phase already produced (do not repeat them; write only the remaining ones):\n"
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
) -> list[dict[str, Any]]:
    content = request_blocks(request, plan, cache)
    content.append({"type": "text", "text": phase_text(phase, manifest, produced, feedback)})
    return [{"role": "user", "content": content}]


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
    if path.endswith((".ts", ".tsx", ".js", ".jsx")):
        return tuple(_TS_EXPORT.findall(content))
    if path.endswith("package.json"):
        return _package_dependencies(content)
    return ()


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
