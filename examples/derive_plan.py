"""Derive the file plan of a hand-written cassette from its file answers, and write ARCH's
answers so that replaying the cassette plans exactly the files its later answers write.

    python examples/derive_plan.py examples/cassettes/car-management-app

What it reads: the cassette's file-phase answers (``PHASE.NN.json``, later answers winning,
a cut answer keeping its complete files, as the daemon reads them) and the architecture of
its ``ARCH.01.json``. What it writes: ``ARCH.NN.json``, the architecture and then the file
plan, in answers of at most ``ARCH_CHARS`` characters (ARCH's ``max_tokens`` at four
characters a token):

- ``ARCH.01``: the architecture, then the first plan entries, cut at ``max_tokens`` in the
  middle of an entry (the daemon keeps the architecture and every entry before that one);
- ``ARCH.02`` on: the rest of the plan (``FilePlanMore``), each answer starting with the
  entry the previous one lost, ``complete`` false until the last; the second of them is
  cut as well when there are three or more.

Each plan entry is derived from its file: the phase whose answer writes it, a one-line
purpose (module docstring, leading comment, the architecture's page or component of that
name, else what the file defines), its exports with their signatures (the daemon's own
readers: ``daemon.verify.interfaces``, ``daemon.prompts.exports_of``), every name another
file imports from it among them (``daemon.verify.resolve.cross_imports``), and the project
files it imports. A FastAPI router's (or app's) export lists its routes as
``METHOD /path``; the architecture's endpoints get the request and response schema names
their route functions declare. Run it again after editing a file answer; the output
depends only on the cassette's answers.
"""

from __future__ import annotations

import ast
import json
import math
import posixpath
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.answers import interpret_files, interpret_plan  # noqa: E402
from daemon.llm import LLMAnswer, cassette_entry_name  # noqa: E402
from daemon.prompts import exports_of  # noqa: E402
from daemon.states import FILE_PHASE_NAMES, PHASE_BY_NAME  # noqa: E402
from daemon.states.base import ArchPlan, PlannedExport, PlannedFile  # noqa: E402
from daemon.verify import interfaces  # noqa: E402
from daemon.verify.conformance import defined_names  # noqa: E402
from daemon.verify.resolve import cross_imports  # noqa: E402
from daemon.verify.routes import HTTP_METHODS, Route, backend_routes  # noqa: E402
from daemon.verify.scripts import is_script, parse_script, text, tree  # noqa: E402

CHARS_PER_TOKEN = 4
ARCH_MAX_TOKENS = PHASE_BY_NAME["ARCH"].max_tokens
ARCH_CHARS = ARCH_MAX_TOKENS * CHARS_PER_TOKEN
# The input tokens recorded for ARCH's first call; later calls add what they are shown.
FIRST_INPUT_TOKENS = 1500
SEPARATORS = (",", ":")  # the answers' JSON, written compactly as structured output is
# What a file of a known name is for, when the file does not say.
KNOWN_PURPOSES = {
    "requirements.txt": "pinned Python dependencies of the backend",
    "package.json": "npm manifest: scripts, dependencies and dev dependencies",
    "tsconfig.json": "TypeScript compiler options (strict, bundler resolution, JSX)",
    "vite.config.ts": "Vite config: the React plugin and the dev server's /api proxy",
    "postcss.config.js": "PostCSS plugins: Tailwind and Autoprefixer",
    "tailwind.config.js": "Tailwind config: content globs and theme colors",
    "index.html": "HTML entry page that loads src/main.tsx",
    "vite-env.d.ts": "Vite's client type declarations (import.meta.env)",
    "index.css": "global styles: Tailwind layers and shared component classes",
    "main.tsx": "React entry: renders App inside the router and the auth provider",
    ".dockerignore": "files kept out of the Docker build context",
    "nginx.conf": "nginx config: serves the SPA and proxies /api to the backend",
    "docker-compose.yml": "docker compose stack: database, backend and frontend",
    "README.md": "project README: running with Docker or locally, configuration, the API",
    "config.py": "application settings, read from the environment (.env)",
    "database.py": "SQLAlchemy engine, session factory, declarative Base, get_db dependency",
    "main.py": "FastAPI app: logging, middleware, error handlers, routers under /api, health",
    "App.tsx": "the SPA's routes: public auth pages, protected pages inside the layout",
    "types.ts": "TypeScript types of the API's data and request bodies, and option lists",
    "client.ts": "axios API client: bearer token, error messages, one call object per resource",
    "ci.yml": "GitHub Actions CI: backend and frontend jobs on pushes to main and pull requests",
}
# Files of these names, in the folder (backend, frontend) they belong to.
FOLDER_PURPOSES = {
    "Dockerfile": "container image of the {}",
    ".dockerignore": "files kept out of the {}'s Docker build context",
}
_DIRECTIVE = re.compile(r"^(/// ?<reference|/\*\* ?@type|#!|# syntax=)")
_COMMENT = re.compile(r"^\s*(?:#|--|//|/\*\*?|<!--)\s*(.*?)\s*(?:\*/|-->)?\s*$")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    cassette = Path(argv[1])
    files, writers = read_files(cassette)
    plan = read_architecture(cassette)
    plan = with_schemas(plan, files)
    entries = file_plan(plan, files, writers)
    answers = arch_answers(plan, entries)
    for old in cassette.glob("ARCH.[0-9][0-9].json"):
        old.unlink()
    for number, (answer_text, stop_reason, input_tokens) in enumerate(answers, 1):
        entry = {
            "phase": "ARCH",
            "call": number,
            "request": {"max_tokens": ARCH_MAX_TOKENS},
            "response": {
                "stop_reason": stop_reason,
                "text": answer_text,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": math.ceil(len(answer_text) / CHARS_PER_TOKEN),
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                },
            },
        }
        path = cassette / cassette_entry_name("ARCH", number)
        path.write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(len(e.model_dump_json()) for e in entries)
    print(
        f"{len(entries)} planned files ({size} characters, about {size // CHARS_PER_TOKEN} "
        f"tokens) in {len(answers)} ARCH answers: "
        + ", ".join(f"{len(t)} chars {s}" for t, s, _ in answers)
    )
    return 0


# --- the cassette's files ------------------------------------------------------------------


def read_files(cassette: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every file the file phases' answers write (later answers winning), in phase order,
    and the phase that writes each."""
    files: dict[str, str] = {}
    writers: dict[str, str] = {}
    for phase in FILE_PHASE_NAMES:
        for call in range(1, 100):
            path = cassette / cassette_entry_name(phase, call)
            if not path.is_file():
                break
            response = json.loads(path.read_text(encoding="utf-8"))["response"]
            answer = LLMAnswer(response["text"], response["stop_reason"])
            for new in interpret_files(answer).files:
                files[new.path] = new.content
                writers[new.path] = phase
    return files, writers


def read_architecture(cassette: Path) -> ArchPlan:
    """The architecture of ARCH's first answer (whole or cut after it), without its plan."""
    response = json.loads((cassette / cassette_entry_name("ARCH", 1)).read_text())["response"]
    plan = interpret_plan(LLMAnswer(response["text"], response["stop_reason"]), first=True).plan
    if plan is None:
        raise SystemExit("ARCH.01.json holds no whole architecture")
    return plan.model_copy(update={"files": []})


# --- the architecture's endpoints ----------------------------------------------------------


def with_schemas(plan: ArchPlan, files: Mapping[str, str]) -> ArchPlan:
    """The architecture with each endpoint's request and response schema names, as the
    route functions declare them (the body parameter's schema; ``response_model``, else a
    schema as return annotation)."""
    schemas = {
        node.name
        for path, content in files.items()
        if path.endswith(".py") and "/schemas/" in path
        for node in ast.parse(content).body
        if isinstance(node, ast.ClassDef)
    }
    declared: dict[tuple[str, str], tuple[str, str]] = {}
    by_line = {(r.file, r.line): r for r in backend_routes(files)}
    for path in {r.file for r in by_line.values()}:
        for node in ast.walk(ast.parse(files[path])):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                route = by_line.get((path, decorator.lineno))
                if route is not None and isinstance(decorator, ast.Call):
                    declared[route.method, route.path] = _schemas_of(node, decorator, schemas)
    endpoints = []
    for endpoint in plan.endpoints:
        request, response = declared.get((endpoint.method, endpoint.path), ("", ""))
        endpoints.append(endpoint.model_copy(update={"request": request, "response": response}))
    return plan.model_copy(update={"endpoints": endpoints})


def _schemas_of(
    function: ast.FunctionDef | ast.AsyncFunctionDef, decorator: ast.Call, schemas: set[str]
) -> tuple[str, str]:
    def is_schema(node: ast.expr | None) -> bool:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node else set()
        return bool(names & schemas)

    request = next(
        (ast.unparse(a.annotation) for a in function.args.args if is_schema(a.annotation)), ""
    )
    model = next((k.value for k in decorator.keywords if k.arg == "response_model"), None)
    if model is None and is_schema(function.returns):
        model = function.returns
    return request, ast.unparse(model) if model is not None else ""


# --- the file plan -------------------------------------------------------------------------


def file_plan(
    plan: ArchPlan, files: Mapping[str, str], writers: Mapping[str, str]
) -> list[PlannedFile]:
    refs = cross_imports(files)
    imports: dict[str, list[str]] = defaultdict(list)
    imported: dict[str, set[str]] = defaultdict(set)
    for ref in refs:
        if ref.target not in imports[ref.importer]:
            imports[ref.importer].append(ref.target)
        imported[ref.target].update(n for n in ref.names if n != "*")
    routes: dict[str, list[Route]] = defaultdict(list)
    for route in backend_routes(files):
        routes[route.file].append(route)
    named = {p.name: f"{p.name} ({p.route}): {p.purpose}" for p in plan.pages}
    named |= {c.name: f"{c.name}: {c.purpose}" for c in plan.components}
    entries = []
    for path, content in files.items():
        exports = exports_for(path, content, imported[path], routes[path], files)
        entries.append(
            PlannedFile(
                path=path,
                phase=writers[path],
                purpose=purpose(path, content, named, exports),
                exports=exports,
                imports=imports[path],
            )
        )
    _reexport_kinds(entries, refs)
    check(entries, files, refs)
    return entries


def _reexport_kinds(entries: list[PlannedFile], refs: Iterable[Any]) -> None:
    """A re-exported name is of the kind it has in the file it comes from."""
    by_path = {e.path: e for e in entries}
    for ref in refs:
        kinds = {x.name: x.kind for x in by_path[ref.target].exports}
        for export in by_path[ref.importer].exports:
            if export.signature.startswith("re-export of ") and export.name in ref.names:
                export.kind = kinds.get(export.name, export.kind)


def purpose(path: str, content: str, named: Mapping[str, str], exports: list[PlannedExport]) -> str:
    """One line: the file's own docstring or leading comment, else what the architecture
    says of the page or component of its name, else what it is for by its name or kind."""
    name = posixpath.basename(path)
    stem = name.split(".")[0]
    if path.endswith(".py"):
        try:
            docstring = ast.get_docstring(ast.parse(content))
        except SyntaxError:
            docstring = None
        if docstring:
            return _first_sentence(docstring)
    elif not name.endswith((".json", ".md")) and (comment := _leading_comment(content)):
        return comment
    if stem in named:
        return named[stem]
    if name in FOLDER_PURPOSES:
        return FOLDER_PURPOSES[name].format(path.split("/")[0] if "/" in path else "project")
    if name in KNOWN_PURPOSES:
        return KNOWN_PURPOSES[name]
    folder = posixpath.basename(posixpath.dirname(path))
    defined = ", ".join(x.name for x in exports if x.name != "default")
    if name == "__init__.py":
        return f"the {folder} package" + (f": re-exports {defined}" if defined else "")
    kinds = {
        "models": "SQLAlchemy model",
        "schemas": "Pydantic schemas",
        "services": "business logic",
        "routers": "API routes",
        "utils": "helpers",
        "hooks": "React hook",
        "api": "API layer",
        "contexts": "React context",
    }
    routes = [x.signature.split(": ", 1)[1] for x in exports if x.kind == "router"]
    if folder == "routers" and routes:
        paths = [route.split(" ", 1)[1] for route in routes[0].split(", ")]
        return f"API routes under {posixpath.commonpath(paths)}"
    label = kinds.get(folder, "module")
    return f"{label}: {defined}" if defined else f"{label} {stem}"


def _first_sentence(docstring: str) -> str:
    line = docstring.strip().splitlines()[0].strip()
    return line.rstrip(".")


def _leading_comment(content: str) -> str:
    for line in content.splitlines()[:3]:
        if not line.strip() or _DIRECTIVE.match(line.strip()):
            continue
        found = _COMMENT.match(line)
        if found and found[1] and line.lstrip()[:2] in ("# ", "--", "//", "/*", "<!"):
            return found[1].rstrip(".")
        return ""
    return ""


def exports_for(
    path: str,
    content: str,
    imported: set[str],
    routes: list[Route],
    files: Mapping[str, str],
) -> list[PlannedExport]:
    """What a file offers: its public names with their signatures (route functions fold
    into their router's routes), and every name other files import from it."""
    if path.endswith(".py"):
        found = _python_exports(path, content, imported, routes)
    elif is_script(path) and not path.endswith(".d.ts"):
        found = _script_exports(path, content)
    else:
        return []
    names = {x.name for x in found}
    found += [_reexport(path, content, name) for name in sorted(imported - names)]
    return found


def _python_exports(
    path: str, content: str, imported: set[str], routes: list[Route]
) -> list[PlannedExport]:
    module = ast.parse(content)
    handlers = _route_handlers(module)
    schemas = {"BaseModel"}  # pydantic models: BaseModel and the file's classes built on it
    for node in module.body:
        if isinstance(node, ast.ClassDef) and {ast.unparse(b) for b in node.bases} & schemas:
            schemas.add(node.name)
    lines: dict[str, str] = {}
    for node in module.body:
        for line in interfaces._python_statement(node):
            for name in _python_names(line):
                lines.setdefault(name, _exact(line))
    public = [n for n in exports_of(path, content) if not n.startswith("_") and n not in handlers]
    wanted = [*public, *sorted(imported - set(public)), *_dunder_all(module)]
    found: list[PlannedExport] = []
    for name in dict.fromkeys(wanted):
        node = _python_binding(module, name)
        if node is None:
            continue  # bound by an import: a re-export
        signature = lines.get(name) or _exact(ast.unparse(node))
        kind = _python_kind(node, schemas)
        if kind == "router":
            owned = [r for r in routes if _decorates(module, name, r.line)]
            if owned:
                signature += ": " + ", ".join(f"{r.method} {r.path}" for r in owned)
        found.append(PlannedExport(name=name, kind=kind, signature=signature))
    found += [
        _reexport(path, content, name)
        for name in _dunder_all(module)
        if name not in {x.name for x in found}
    ]
    return found


def _route_handlers(module: ast.Module) -> dict[str, set[int]]:
    """The route functions of a module (decorated ``@x.get(...)``) by name, with the lines
    of their route decorators."""
    handlers: dict[str, set[int]] = {}
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = {
                d.lineno
                for d in node.decorator_list
                if isinstance(d, ast.Call)
                and isinstance(d.func, ast.Attribute)
                and d.func.attr in (*HTTP_METHODS, "api_route")
            }
            if lines:
                handlers[node.name] = lines
    return handlers


def _decorates(module: ast.Module, router: str, line: int) -> bool:
    """Whether the route decorator at ``line`` belongs to ``router``."""
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for d in node.decorator_list:
                if d.lineno == line and isinstance(d, ast.Call):
                    target = d.func.value if isinstance(d.func, ast.Attribute) else None
                    return isinstance(target, ast.Name) and target.id == router
    return False


def _python_names(line: str) -> list[str]:
    if found := re.match(r"(?:async def|def|class) (\w+)", line):
        return [found[1]]
    if found := re.match(r"((?:\w+ = )*\w+)(?:: [^=]+)? = ", line):
        return found[1].split(" = ")
    return []


def _python_binding(module: ast.Module, name: str) -> ast.stmt | None:
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
    return None


def _python_kind(node: ast.stmt | None, schemas: set[str]) -> str:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return "function"
    if isinstance(node, ast.ClassDef):
        bases = {ast.unparse(b) for b in node.bases}
        if "Base" in bases:  # the declarative base of the SQLAlchemy models
            return "model"
        return "schema" if bases & schemas else "class"
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("APIRouter", "FastAPI"):
        return "router"
    if isinstance(value, ast.Subscript):
        return "type"
    return "constant"


def _dunder_all(module: ast.Module) -> list[str]:
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                return [str(n) for n in ast.literal_eval(node.value)]
            except ValueError:
                return []
    return []


def _script_exports(path: str, content: str) -> list[PlannedExport]:
    local_types = _local_types(path, content)
    lines: dict[str, str] = {}
    for line in interfaces._script(path, content):
        line = _exact(line)
        name = _script_name(line)
        if name is not None:
            used = [t for n, t in local_types.items() if re.search(rf"\b{n}\b", line)]
            lines.setdefault(name, "; ".join([line, *used]))
    found = []
    for name in exports_of(path, content):
        signature = lines.get(name, "")
        found.append(
            PlannedExport(name=name, kind=_script_kind(path, name, signature), signature=signature)
        )
    return found


def _local_types(path: str, content: str) -> dict[str, str]:
    """The file's own (unexported) interfaces and type aliases: a component's props."""
    found = {}
    for node in tree(path, content).root_node.named_children:
        if node.type in ("interface_declaration", "type_alias_declaration"):
            name = text(node.child_by_field_name("name"))
            found[name] = _exact(text(node))
    return found


def _script_name(line: str) -> str | None:
    if line.startswith("export default"):
        return "default"
    found = re.match(
        r"export (?:declare )?(?:async )?(?:abstract )?"
        r"(?:function\*?|class|const|let|var|interface|type|enum|namespace) (\w+)",
        line,
    )
    return found[1] if found else None


def _script_kind(path: str, name: str, signature: str) -> str:
    if re.match(r"export (interface|type) ", signature):
        return "type"
    if re.match(r"use[A-Z]", name) and not signature.startswith("export const"):
        return "hook"
    function = re.match(r"export (default )?(async )?function|export const \w+ = \(", signature)
    if function and path.endswith(".tsx") and (name == "default" or name[:1].isupper()):
        return "component"
    if function:
        return "function"
    if re.match(r"export (default )?class ", signature):
        return "class"
    return "constant"


def _reexport(path: str, content: str, name: str) -> PlannedExport:
    """A name a file imports from another project file, for its own importers."""
    if path.endswith(".py"):
        for node in ast.parse(content).body:
            if isinstance(node, ast.ImportFrom) and name in {
                a.asname or a.name for a in node.names
            }:
                origin = f"{'.' * node.level}{node.module or ''}.{name}"
                return PlannedExport(name=name, kind="constant", signature=f"re-export of {origin}")
    for item in parse_script(path, content).reexports:
        if item.name == name:
            origin = f"{item.original} from '{item.spec}'"
            return PlannedExport(name=name, kind="constant", signature=f"re-export of {origin}")
    raise SystemExit(f"{path}: cannot tell what {name!r} is")


def _exact(line: str) -> str:
    """A signature line on one line, whitespace collapsed, not shortened."""
    return re.sub(r"\s+", " ", line).strip()


def check(entries: list[PlannedFile], files: Mapping[str, str], refs: Iterable[Any]) -> None:
    """The plan must describe the files exactly: every file once, every export defined,
    every name another file imports among the target's exports."""
    assert [e.path for e in entries] == list(files), "every file, once, in phase order"
    by_path = {e.path: e for e in entries}
    for entry in entries:
        defined = defined_names(entry.path, files[entry.path])
        for export in entry.exports:
            assert defined is None or export.name in defined, (entry.path, export.name)
            assert export.signature, (entry.path, export.name)
    for ref in refs:
        offered = {x.name for x in by_path[ref.target].exports}
        missing = [n for n in ref.names if n != "*" and n not in offered]
        assert not missing, f"{ref.importer} imports {missing} from {ref.target}"
        assert ref.target in by_path[ref.importer].imports


# --- ARCH's answers ------------------------------------------------------------------------


def arch_answers(plan: ArchPlan, entries: list[PlannedFile]) -> list[tuple[str, str, int]]:
    """(text, stop_reason, input tokens) of each ARCH answer. Which entries a cut answer
    kept is read back with the daemon's own interpretation: the next answer starts there."""
    architecture = plan.model_dump(exclude_defaults=True, exclude={"files"})
    architecture_chars = len(json.dumps(architecture, separators=SEPARATORS))
    answers: list[tuple[str, str, int]] = []
    rest = list(entries)
    first = True
    while rest:
        number = len(answers) + 1
        cut = first or number == 3
        items = [e.model_dump() for e in rest]
        planned_chars = sum(len(e.model_dump_json()) for e in entries[: len(entries) - len(rest)])
        input_tokens = FIRST_INPUT_TOKENS + (
            0 if first else (architecture_chars + planned_chars) // CHARS_PER_TOKEN
        )
        if not cut:
            items = _fitting(items)
        body = {**architecture, "files": items} if first else {"files": items}
        done = len(items) == len(rest)
        full = json.dumps({**body, "complete": done}, separators=SEPARATORS, ensure_ascii=False)
        if cut and len(full) > ARCH_CHARS:
            answer_text, stop_reason = full[:ARCH_CHARS], "max_tokens"
        else:
            answer_text, stop_reason = full, "end_turn"
        result = interpret_plan(LLMAnswer(answer_text, stop_reason), first=first)
        assert not result.errors, result.errors
        assert not first or result.plan is not None, "the architecture must fit whole"
        kept = [e.path for e in result.planned]
        assert kept == [e.path for e in rest[: len(kept)]], "the answer keeps a prefix"
        assert kept or first, "a cut answer after the first must keep an entry"
        answers.append((answer_text, stop_reason, input_tokens))
        rest = rest[len(kept) :]
        first = False
        assert result.done == (not rest)
    return answers


def _fitting(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As many entries as an answer of ARCH_CHARS holds whole, at least one."""
    taken: list[dict[str, Any]] = []
    for item in items:
        trial = json.dumps(
            {"files": [*taken, item], "complete": False}, separators=SEPARATORS, ensure_ascii=False
        )
        if len(trial) > ARCH_CHARS and taken:
            break
        taken.append(item)
    return taken


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
