"""A quality gate over generated files: syntax, JSON, placeholders, and whether imports resolve.

Pure and fast (the standard library only, no subprocess, no network), so it can run after every
phase. ``check_files`` looks at what one phase just wrote, against every file of the job;
``check_project`` repeats the cross-file part (imports and declared dependencies) at the end.

Each problem says whether the phase that wrote the file can fix it alone (``fixable_now``): a
syntax error, a placeholder, or an import of a missing sibling can be; an import of a file in
another directory, or of an undeclared package, may be satisfied by a later phase.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import posixpath
import re
import sys
import tomllib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One finding about one file; ``message`` is one line, led by the line number if known."""

    path: str
    message: str
    fixable_now: bool
    kind: str = "content"  # content (syntax, JSON, placeholders), import, or dependency


def check_files(new: Mapping[str, str], existing: Mapping[str, str]) -> list[Problem]:
    """Check the files a phase just produced against every file of the job.

    ``existing`` may or may not already hold ``new``'s paths; ``new`` wins where both do."""
    project = _Project({**existing, **new})
    problems: list[Problem] = []
    for path in sorted(new):
        problems.extend(_content_problems(path, new[path], project))
        problems.extend(project.import_problems(path))
    return problems


def check_project(files: Mapping[str, str]) -> list[Problem]:
    """The whole job at its end: cross-file checks only (imports, dependencies) over all files."""
    project = _Project(dict(files))
    return [problem for path in sorted(files) for problem in project.import_problems(path)]


# --- one file on its own -------------------------------------------------------------------

_MAY_BE_EMPTY = frozenset({"__init__.py", ".gitkeep", ".keep", "py.typed", ".nojekyll"})
# matched against the lower-cased text, and only when one of the cheap keywords occurs
_PLACEHOLDER_KEYWORDS = (
    "rest of",
    "existing ",
    "previous ",
    "remaining ",
    "other ",
    "todo",
    "brevity",
    " here",
)
_PLACEHOLDER = re.compile(
    r"\.\.\.\s*\(?\s*rest of (?:the )?(?:code|file|implementation|component|module)"
    r"|\brest of (?:the )?(?:code|file|implementation|component|module|class)"
    r" (?:remains|is unchanged|unchanged|goes here|omitted|as before)"
    r"|\.\.\.\s*(?:existing|previous|remaining|other) (?:code|imports|methods|routes|functions"
    r"|components|fields|styles)\b"
    r"|\btodo:?\s*implement\b"
    r"|\b(?:omitted|elided|truncated) for brevity"
    r"|\byour (?:code|implementation|logic) (?:goes )?here\b"
)
_JSONC_NAMES = re.compile(r"(?:^|/)(?:[tj]sconfig[^/]*\.json|\.vscode/[^/]+\.json|[^/]+\.jsonc)$")


def _content_problems(path: str, content: str, project: _Project) -> Iterator[Problem]:
    name = posixpath.basename(path)
    if not content.strip():
        if name not in _MAY_BE_EMPTY:
            yield Problem(path, "the file is empty", True)
        return
    if found := _placeholder(content):
        yield Problem(path, found, True)
    if path.endswith(".py"):
        if (error := project.python_module(path).error) is not None:
            yield Problem(path, error, True)
    elif path.endswith((".json", ".jsonc")):
        yield from _json_problems(path, content)
    elif path.endswith(".toml"):
        try:
            tomllib.loads(content)
        except tomllib.TOMLDecodeError as exc:
            yield Problem(path, f"invalid TOML: {exc}", True)


def _placeholder(content: str) -> str | None:
    lowered = content.lower()
    if not any(keyword in lowered for keyword in _PLACEHOLDER_KEYWORDS):
        return None
    if found := _PLACEHOLDER.search(lowered):
        return f"line {_line_of(lowered, found.start())}: placeholder instead of code: '{found[0]}'"
    return None


def _json_problems(path: str, content: str) -> Iterator[Problem]:
    try:
        document = _load_json(path, content)
    except json.JSONDecodeError as exc:
        yield Problem(
            path, f"line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})", True
        )
        return
    except RecursionError:
        yield Problem(path, "invalid JSON: nested too deeply", True)
        return
    if posixpath.basename(path) == "package.json":
        for message in _package_json_problems(document):
            yield Problem(path, message, True)


def _package_json_problems(document: Any) -> Iterator[str]:
    if not isinstance(document, dict):
        yield "package.json must be a JSON object"
        return
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        yield 'package.json needs a non-empty "name"'
    scripts = document.get("scripts")
    if not isinstance(scripts, dict) or not scripts:
        yield 'package.json needs a "scripts" object with at least one script'
    for key in _DEPENDENCY_KEYS:
        if key in document and not isinstance(document[key], dict):
            yield f'package.json "{key}" must be an object'


def _load_json(path: str, content: str) -> Any:
    if _JSONC_NAMES.search(path):
        content = _strip_jsonc(content)
    return json.loads(content)


_JSONC_COMMENTS = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.DOTALL)
_JSONC_COMMAS = re.compile(r'("(?:\\.|[^"\\])*")|,(?=\s*[}\]])')


def _strip_jsonc(content: str) -> str:
    """JSON with comments and trailing commas (tsconfig) as plain JSON, lines kept in place."""

    def blank(match: re.Match[str]) -> str:
        return match[1] or "\n" * match[0].count("\n")

    return _JSONC_COMMAS.sub(blank, _JSONC_COMMENTS.sub(blank, content))


def _line_of(content: str, offset: int) -> int:
    return content.count("\n", 0, offset) + 1


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def _target_dir_problem(importer: str, target: str, message: str) -> Problem:
    """An unresolved import is the writing phase's to fix when the missing file is a sibling."""
    return Problem(importer, message, _parent(target) == _parent(importer), kind="import")


# --- the job as a whole --------------------------------------------------------------------


class _Project:
    """Indexes over all files of a job, built lazily and shared by both languages' checks."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self._modules: dict[str, _PyModule] = {}
        self.python = _PythonImports(self)
        self.scripts = _ScriptImports(self)

    @cached_property
    def python_dirs(self) -> frozenset[str]:
        """Directories holding a .py file at any depth (namespace packages count as modules)."""
        return frozenset(_ancestors(path for path in self.files if path.endswith(".py")))

    def python_module(self, path: str) -> _PyModule:
        if path not in self._modules:
            self._modules[path] = _parse_module(path, self.files[path])
        return self._modules[path]

    def import_problems(self, path: str) -> Iterator[Problem]:
        if path.endswith(".py"):
            yield from self.python.problems(path)
        elif path.endswith(_SCRIPT_SUFFIXES):
            yield from self.scripts.problems(path)


def _ancestors(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        directory = _parent(path)
        while directory and directory not in found:
            found.add(directory)
            directory = _parent(directory)
    return found


# --- Python --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PyModule:
    """What the checks need of a Python file; the tree itself is dropped at once, since keeping
    every tree of a job alive makes the garbage collector's full passes far more frequent."""

    error: str | None
    imports: tuple[_PyImport, ...] = ()
    defined: frozenset[str] | None = None  # top-level names; None when any may exist

    @classmethod
    def parse(cls, path: str, content: str) -> _PyModule:
        with warnings.catch_warnings():
            # invalid escape sequences in generated code warn; they are not this gate's concern
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(content, filename=path)
            except SyntaxError as exc:
                return cls(f"line {exc.lineno or 1}: {exc.msg}")
            except (ValueError, RecursionError) as exc:  # null bytes, absurd nesting
                return cls(f"line 1: {exc}")
        imports = tuple(_python_imports(tree.body))
        return cls(None, imports, _bound_names(tree) if path.endswith("__init__.py") else None)


# A job's files are checked again after each of its phases: parse each version once.
_parse_module = functools.lru_cache(maxsize=2048)(_PyModule.parse)


@dataclass(frozen=True)
class _PyImport:
    line: int
    level: int
    module: str
    names: tuple[str, ...]
    optional: bool

    @property
    def label(self) -> str:
        return "." * self.level + self.module


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _python_imports(statements: Iterable[ast.AST], optional: bool = False) -> Iterator[_PyImport]:
    """Every import statement at any depth; those guarded by ``except ImportError`` are optional."""
    for node in statements:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _PyImport(node.lineno, 0, alias.name, (), optional)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            yield _PyImport(node.lineno, node.level, node.module or "", names, optional)
        else:
            guarded = isinstance(node, ast.Try | ast.TryStar) and _catches_import_error(node)
            for field in _BLOCKS:
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _python_imports(block, optional or (guarded and field == "body"))


def _catches_import_error(node: ast.Try | ast.TryStar) -> bool:
    caught = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(
            kind is None or (isinstance(kind, ast.Name) and kind.id in caught) for kind in kinds
        ):
            return True
    return False


def _bound_names(tree: ast.Module) -> frozenset[str] | None:
    """The names a module defines at top level; None when it may define any (``import *``)."""
    names: set[str] = set()
    statements: list[ast.AST] = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            continue
        for field in _BLOCKS:
            statements.extend(getattr(node, field, None) or ())
    return frozenset(names)


@dataclass(frozen=True)
class _Miss:
    """Why an import does not resolve under one base directory, and the file it would need."""

    message: str
    target: str


class _PythonImports:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files

    def problems(self, path: str) -> Iterator[Problem]:
        for item in self.project.python_module(path).imports:
            if item.optional:
                continue
            problem = self._relative(path, item) if item.level else self._absolute(path, item)
            if problem is not None:
                yield problem

    def _relative(self, path: str, item: _PyImport) -> Problem | None:
        base = _parent(path)
        for _ in range(item.level - 1):
            if not base:
                return Problem(
                    path,
                    f"line {item.line}: import '{item.label}' goes above the project",
                    False,
                    kind="import",
                )
            base = _parent(base)
        miss = self._resolve(base, item)
        if miss is None:
            return None
        return _target_dir_problem(path, miss.target, f"line {item.line}: {miss.message}")

    def _absolute(self, path: str, item: _PyImport) -> Problem | None:
        top = item.module.split(".")[0]
        first_miss = None
        for root in self._roots_for(path):
            if self._has_top(root, top):
                miss = self._resolve(root, item)
                if miss is None:
                    return None
                first_miss = first_miss or miss
        if top in sys.stdlib_module_names or self._declared(top):
            return None
        if first_miss is not None:
            return _target_dir_problem(
                path, first_miss.target, f"line {item.line}: {first_miss.message}"
            )
        if self.requirements is None:
            return None
        return Problem(
            path, f"line {item.line}: {self._undeclared(path, top)}", False, kind="dependency"
        )

    def _resolve(self, base: str, item: _PyImport) -> _Miss | None:
        module_path = _join(base, *item.module.split(".")) if item.module else base
        kind = self._kind(module_path)
        if kind is None:
            target = module_path + ".py"
            return _Miss(
                f"import '{item.label}' does not resolve (no {target} or {module_path}/__init__.py)",
                target,
            )
        if kind == "module":
            return None
        for name in item.names:
            if miss := self._name_miss(module_path, kind, item, name):
                return miss
        return None

    def _name_miss(self, package: str, kind: str, item: _PyImport, name: str) -> _Miss | None:
        if name == "*" or self._kind(_join(package, name)) is not None:
            return None
        init = _join(package, "__init__.py")
        if kind == "package":
            defined = self.project.python_module(init).defined
            if defined is None or name in defined or name.startswith("__"):
                return None
            message = f"cannot import '{name}' from '{item.label}': no module {package}/{name}.py"
            return _Miss(f"{message} and {init} does not define it", init)
        target = _join(package, name + ".py")
        return _Miss(f"cannot import '{name}' from '{item.label}': no module {target}", target)

    def _kind(self, module_path: str) -> str | None:
        if module_path + ".py" in self.files:
            return "module"
        if _join(module_path, "__init__.py") in self.files:
            return "package"
        if module_path in self.project.python_dirs or not module_path:
            return "namespace"
        return None

    def _has_top(self, root: str, top: str) -> bool:
        kind = self._kind(_join(root, top))
        if kind == "namespace":
            # a directory without __init__.py loses to an installed package of the same name
            return top not in _PROVIDERS and not self._declared(top)
        return kind is not None

    def _roots_for(self, path: str) -> list[str]:
        """Source roots, those above the file first (deepest first), then the others."""
        above = [r for r in self.roots if not r or path.startswith(r + "/")]
        above.sort(key=len, reverse=True)
        return above + sorted(r for r in self.roots if r not in above)

    @cached_property
    def roots(self) -> frozenset[str]:
        """Directories that hold top-level modules: the parent of each outermost package, the
        directory of each script, and the parent of an ``app/main.py``-style directory."""
        roots: set[str] = set()
        for path in self.files:
            if not path.endswith(".py"):
                continue
            directory = _parent(path)
            while directory and _join(directory, "__init__.py") in self.files:
                directory = _parent(directory)
            roots.add(directory)
            if posixpath.basename(path) == "main.py" and directory == _parent(path) and directory:
                roots.add(_parent(directory))
        return frozenset(roots)

    @cached_property
    def requirements(self) -> dict[str, frozenset[str]] | None:
        """Declared distributions per requirements file, or None when the job has none yet."""
        found = {p: _requirements(p, c) for p, c in self.files.items() if _is_requirements(p)}
        return {p: names for p, names in found.items() if names is not None} or None

    @cached_property
    def _declared_names(self) -> frozenset[str]:
        return frozenset().union(*(self.requirements or {}).values())

    def _declared(self, top: str) -> bool:
        return any(dist in self._declared_names for dist in _providers(top))

    def _undeclared(self, path: str, top: str) -> str:
        assert self.requirements is not None
        nearest = [p for p in self.requirements if _in_scope(path, _parent(p))]
        where = max(nearest, key=len) if nearest else min(self.requirements)
        return (
            f"module '{top}' is neither part of the project nor declared in {where} "
            f"(add {_providers(top)[0]})"
        )


def _is_requirements(path: str) -> bool:
    name = posixpath.basename(path)
    if name == "pyproject.toml":
        return True
    return name.endswith(".txt") and (
        name.startswith("requirements") or posixpath.basename(_parent(path)) == "requirements"
    )


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _requirements(path: str, content: str) -> frozenset[str] | None:
    if path.endswith(".toml"):
        return _pyproject_requirements(content)
    lines = (line.split(" #")[0].strip() for line in content.splitlines())
    return _distributions(line for line in lines if line and not line.startswith(("#", "-")))


def _pyproject_requirements(content: str) -> frozenset[str] | None:
    """PEP 621 and Poetry dependency tables; None when the file declares no project."""
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError:
        return None
    project = _table(document, "project")
    poetry = _table(_table(document, "tool"), "poetry")
    if not project and not poetry:
        return None
    lists = [project.get("dependencies"), *_table(project, "optional-dependencies").values()]
    lists.extend(_table(document, "dependency-groups").values())
    tables = [_table(poetry, "dependencies"), _table(poetry, "dev-dependencies")]
    tables.extend(_table(group, "dependencies") for group in _table(poetry, "group").values())
    specs = [spec for specs in lists if isinstance(specs, list) for spec in specs]
    specs.extend(name for table in tables for name in table)
    return _distributions(spec for spec in specs if isinstance(spec, str))


def _table(document: Any, key: str) -> dict[str, Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def _distributions(specs: Iterable[str]) -> frozenset[str]:
    """Normalised names, each also with its extras (``uvicorn[standard]``)."""
    names: set[str] = set()
    for spec in specs:
        if match := _REQUIREMENT.match(spec):
            name = _normalise(match[1])
            names.add(name)
            for extra in (match[2] or "").split(","):
                if extra.strip():
                    names.add(f"{name}[{_normalise(extra.strip())}]")
    return frozenset(names)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _providers(module: str) -> tuple[str, ...]:
    """Distributions that install a top-level module: known ones first, then the usual names."""
    own = _normalise(module)
    return (*_PROVIDERS.get(module, ()), own, f"python-{own}", f"py{own}", f"{own}-python")


_STANDARD = ("fastapi[standard]", "fastapi[all]")
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "jose": ("python-jose",),
    "jwt": ("pyjwt",),
    "dotenv": ("python-dotenv", "pydantic-settings", "uvicorn[standard]"),
    "multipart": ("python-multipart", *_STANDARD),
    "python_multipart": ("python-multipart", *_STANDARD),
    "yaml": ("pyyaml", "uvicorn[standard]"),
    "psycopg2": ("psycopg2-binary", "psycopg2"),
    "sqlalchemy": ("sqlalchemy", "sqlmodel", "alembic", "flask-sqlalchemy"),
    "pydantic_settings": ("pydantic-settings",),
    "email_validator": ("email-validator", "pydantic[email]", *_STANDARD),
    "passlib": ("passlib",),
    "bcrypt": ("bcrypt", "passlib[bcrypt]"),
    "argon2": ("argon2-cffi", "passlib[argon2]"),
    "uvicorn": ("uvicorn", *_STANDARD),
    "fastapi": ("fastapi",),
    "starlette": ("starlette", "fastapi", "sse-starlette"),
    "pydantic": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "pydantic_core": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "typing_extensions": ("typing-extensions", "pydantic", "fastapi", "sqlalchemy"),
    "anyio": ("anyio", "starlette", "fastapi", "httpx"),
    "httpx": ("httpx", *_STANDARD),
    "jinja2": ("jinja2", "flask", *_STANDARD),
    "markupsafe": ("markupsafe", "jinja2", "flask"),
    "werkzeug": ("werkzeug", "flask"),
    "click": ("click", "uvicorn", "flask", "celery", "typer"),
    "h11": ("h11", "uvicorn", "httpx"),
    "websockets": ("websockets", "uvicorn[standard]"),
    "alembic": ("alembic",),
    "mako": ("mako", "alembic"),
    "greenlet": ("greenlet", "sqlalchemy"),
    "pytest": ("pytest",),
    "_pytest": ("pytest",),
    "slowapi": ("slowapi",),
    "limits": ("limits", "slowapi"),
    "redis": ("redis",),
    "celery": ("celery",),
    "kombu": ("kombu", "celery"),
    "dateutil": ("python-dateutil",),
    "PIL": ("pillow",),
    "cryptography": ("cryptography", "python-jose[cryptography]", "pyjwt[crypto]"),
    "Crypto": ("pycryptodome",),
    "bs4": ("beautifulsoup4",),
    "sklearn": ("scikit-learn",),
    "cv2": ("opencv-python", "opencv-python-headless"),
    "magic": ("python-magic",),
    "socketio": ("python-socketio",),
    "MySQLdb": ("mysqlclient",),
    "attr": ("attrs",),
    "dns": ("dnspython", "email-validator"),
    "certifi": ("certifi", "requests", "httpx"),
    "pkg_resources": ("setuptools",),
}


# --- TypeScript and JavaScript -------------------------------------------------------------

_SCRIPT_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_RESOLVE_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".d.ts", ".json", ".css", ".mjs", ".cjs")
_DEPENDENCY_KEYS = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")

# Left to right, a comment or a string is consumed whole, so an import written inside one
# (an example in a docstring, a code sample in a template literal) is never taken for code.
# Static imports and exports are statements, so they start a line or follow a ";"; that keeps
# prose in JSX text ("import your data from 'CSV'") out.
_SCRIPT_TOKENS = re.compile(
    r"""//[^\n]*|/\*.*?\*/
    |(?:^|;)[ \t]*(?:import|export)(?![\w$])[\w$*{},\s]*?\bfrom\s*(['"])(?P<from>[^'"\n]+)\1
    |(?:^|;)[ \t]*import\s*(['"])(?P<bare>[^'"\n]+)\3
    |(?:import|require)(?<![\w$.]import)(?<![\w$.]require)\s*\(\s*(['"`])(?P<call>[^'"`\n$]+)\5\s*\)
    |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`""",
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)
_AMBIENT = re.compile(r"""\bdeclare\s+module\s+['"]([^'"]+)['"]""")
_VITE_ALIAS = re.compile(r"""(?:['"]@['"]|\bfind\s*:\s*['"]@['"])\s*[:,]""")
_QUOTED_DIR = re.compile(r"""['"](?:\./|/)?(\w[\w.-]*(?:/[\w.-]+)*)/?['"]""")
_NODE_BUILTIN_NAMES = (
    "assert async_hooks buffer child_process cluster console constants crypto dgram "
    "diagnostics_channel dns domain events fs http http2 https inspector module net os path "
    "perf_hooks process punycode querystring readline repl stream string_decoder sys test "
    "timers tls trace_events tty url util v8 vm wasi worker_threads zlib"
)
_NODE_BUILTINS = frozenset(_NODE_BUILTIN_NAMES.split())


def _script_imports(content: str) -> Iterator[tuple[int, str]]:
    for match in _SCRIPT_TOKENS.finditer(content):
        for group in ("from", "bare", "call"):
            if match[group]:
                yield _line_of(content, match.start(group)), match[group]


@dataclass(frozen=True)
class _Alias:
    scope: str
    prefix: str
    target: str


class _ScriptImports:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files

    def problems(self, path: str) -> Iterator[Problem]:
        for line, spec in _script_imports(self.files[path]):
            spec = re.split(r"[?#]", spec, maxsplit=1)[0]
            if problem := self._check(path, spec, f"line {line}: "):
                yield problem

    def _check(self, path: str, spec: str, where: str) -> Problem | None:
        if spec.startswith((".", "/")):
            base = self._package_dir(path) if spec.startswith("/") else _parent(path)
            return self._relative(path, base, spec, where)
        aliased = [
            a for a in self.aliases if _in_scope(path, a.scope) and spec.startswith(a.prefix)
        ]
        for alias in aliased:
            if self._find(_normal(_join(alias.target, spec[len(alias.prefix) :]))):
                return None
        if named := [alias for alias in aliased if alias.prefix]:
            rest = spec[len(named[0].prefix) :]
            return self._relative(path, named[0].target, "./" + rest, where, spec)
        if spec.startswith(("@/", "~/")):
            message = f"import '{spec}' uses the '{spec[:2]}' alias, which no vite.config or tsconfig declares"
            return Problem(path, where + message, False, kind="import")
        return self._package(path, spec, where)

    def _relative(
        self, path: str, base: str, spec: str, where: str, label: str = ""
    ) -> Problem | None:
        label = label or spec
        target = _normal(_join(base, spec.lstrip("/")))
        if target == ".." or target.startswith("../"):
            return Problem(
                path, f"{where}import '{label}' goes above the project", False, kind="import"
            )
        if self._find(target):
            return None
        if spec.startswith("/") and self._find(_normal(_join(base, "public", spec.lstrip("/")))):
            return None  # Vite serves public/ at the root
        message = f"import '{label}' does not resolve (no {target}.* or {target}/index.*)"
        return _target_dir_problem(path, target + ".ts", where + message)

    def _find(self, target: str) -> bool:
        files = self.files
        if target in files:
            return True
        stem, suffix = posixpath.splitext(target)
        if suffix in (".js", ".jsx", ".mjs", ".cjs") and any(
            stem + ts in files for ts in (".ts", ".tsx", ".mts", ".cts")
        ):
            return True  # TypeScript resolves ./x.js to ./x.ts
        index = _join(target, "index")
        return any(target + s in files or index + s in files for s in _RESOLVE_SUFFIXES)

    def _package(self, path: str, spec: str, where: str) -> Problem | None:
        if ":" in spec or spec.startswith("#"):
            return None  # node:fs, virtual: modules, URLs, package.json "imports"
        parts = spec.split("/")
        name = "/".join(parts[:2]) if spec.startswith("@") else parts[0]
        if name in _NODE_BUILTINS or self._ambient(spec):
            return None
        manifest = self._manifest_for(path)
        if manifest is None:
            return None
        manifest_path, declared = manifest
        types_name = "@types/" + name.lstrip("@").replace("/", "__")
        if name in declared or types_name in declared:
            return None
        return Problem(
            path,
            f"{where}package '{name}' is not declared in {manifest_path}",
            False,
            kind="dependency",
        )

    def _ambient(self, spec: str) -> bool:
        return any(fnmatch.fnmatchcase(spec, pattern) for pattern in self.ambient_modules)

    def _manifest_for(self, path: str) -> tuple[str, frozenset[str]] | None:
        directory = _parent(path)
        while True:
            candidate = _join(directory, "package.json")
            if candidate in self.files:
                declared = self.manifests.get(candidate)
                return None if declared is None else (candidate, declared)
            if not directory:
                return None
            directory = _parent(directory)

    def _package_dir(self, path: str) -> str:
        found = self._manifest_for(path)
        return _parent(found[0]) if found else _parent(path)

    @cached_property
    def manifests(self) -> dict[str, frozenset[str]]:
        """Declared packages of each package.json that parses, plus its own name."""
        found: dict[str, frozenset[str]] = {}
        for path, content in self.files.items():
            if posixpath.basename(path) != "package.json":
                continue
            try:
                document = json.loads(content)
            except (ValueError, RecursionError):
                continue
            if isinstance(document, dict):
                tables = [document.get(key) for key in _DEPENDENCY_KEYS]
                names = {name for table in tables if isinstance(table, dict) for name in table}
                found[path] = frozenset({*names, str(document.get("name", ""))})
        return found

    @cached_property
    def ambient_modules(self) -> frozenset[str]:
        return frozenset(
            name
            for path, content in self.files.items()
            if path.endswith(".ts")
            for name in _AMBIENT.findall(content)
        )

    @cached_property
    def aliases(self) -> list[_Alias]:
        aliases: list[_Alias] = []
        for path, content in self.files.items():
            name = posixpath.basename(path)
            if re.fullmatch(r"vite\.config\.[mc]?[jt]s", name):
                aliases.extend(_vite_aliases(path, content))
            elif re.fullmatch(r"[tj]sconfig[^/]*\.json", name):
                aliases.extend(_tsconfig_aliases(path, content))
        return aliases


def _normal(path: str) -> str:
    normal = posixpath.normpath(path) if path else ""
    return "" if normal == "." else normal


def _in_scope(path: str, scope: str) -> bool:
    return not scope or path.startswith(scope + "/")


def _vite_aliases(path: str, content: str) -> Iterator[_Alias]:
    scope = _parent(path)
    if found := _VITE_ALIAS.search(content):
        folder = _QUOTED_DIR.search(content, found.end(), found.end() + 160)
        target = folder[1] if folder and not folder[1].startswith("@") else "src"
        yield _Alias(scope, "@/", _join(scope, target))


def _tsconfig_aliases(path: str, content: str) -> Iterator[_Alias]:
    try:
        document = json.loads(_strip_jsonc(content))
    except (ValueError, RecursionError):
        return
    options = document.get("compilerOptions") if isinstance(document, dict) else None
    if not isinstance(options, dict):
        return
    scope = _parent(path)
    base_url = options.get("baseUrl")
    base = _normal(_join(scope, base_url)) if isinstance(base_url, str) else scope
    if isinstance(base_url, str):
        yield _Alias(scope, "", base)
    paths = options.get("paths")
    for pattern, targets in paths.items() if isinstance(paths, dict) else ():
        if pattern.endswith("/*") and isinstance(targets, list) and targets:
            target = _normal(_join(base, str(targets[0]).removesuffix("*")))
            yield _Alias(scope, pattern[:-1], target)
