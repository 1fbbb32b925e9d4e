"""The routes a FastAPI project declares, read statically from its source: ``backend_routes``.

Understood: ``APIRouter(prefix=...)`` and ``FastAPI()`` objects assigned to a name;
``@r.get/post/put/patch/delete/head/options(path)``, ``@r.api_route(path, methods=[...])``,
``r.add_api_route(path, endpoint, methods=[...])``; ``app.include_router(x, prefix=...)``
where ``x`` is a router of this file, one imported by name (also through an ``__init__.py``
re-export) or ``module.router`` of an imported module, including inside a
``for m in (a, b):`` loop over modules. Paths may use string constants of the same file and
f-strings; what is not a literal becomes ``**``. A router no app is seen to include keeps
its routes under a ``**`` prefix, so an unclear mount never yields a false report.
"""

from __future__ import annotations

import ast
import functools
import posixpath
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from daemon.checks.project import _Project
from daemon.verify.python import PythonResolver
from daemon.verify.routes import ANY, HTTP_METHODS, Route

MAX_MOUNT_DEPTH = 8  # include_router levels followed
MAX_IMPORT_HOPS = 5  # re-exports followed to find an imported router


@dataclass(frozen=True)
class _Decorated:
    owner: str
    methods: tuple[str, ...]
    path: str
    line: int


@dataclass(frozen=True)
class _Include:
    owner: str
    child: str  # a name or dotted name: router, cars.router
    prefix: str
    line: int


@dataclass(frozen=True)
class _RouteFacts:
    """One Python file's routers (name → own prefix), apps, routes and include calls."""

    routers: Mapping[str, str] = field(default_factory=dict)
    apps: frozenset[str] = frozenset()
    routes: tuple[_Decorated, ...] = ()
    includes: tuple[_Include, ...] = ()


def backend_routes(files: Mapping[str, str], project: _Project | None = None) -> list[Route]:
    """The routes that the FastAPI source of ``files`` declares, with their full paths."""
    project = project or _Project(dict(files))
    return _Mounts(project).routes()


class _Mounts:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.resolver = PythonResolver(project)
        self.facts = {
            path: _route_facts(path, content)
            for path, content in project.readable()
            if path.endswith(".py") and _mentions_fastapi(content)
        }
        self.includes: dict[tuple[str, str], list[tuple[_Include, str]]] = {}
        for path, facts in self.facts.items():
            for include in facts.includes:
                owner = self._router(path, include.owner)
                if owner is not None:
                    self.includes.setdefault(owner, []).append((include, path))

    def routes(self) -> list[Route]:
        found: list[Route] = []
        reached: set[tuple[str, str]] = set()
        for path, facts in sorted(self.facts.items()):
            for app in sorted(facts.apps):
                self._mount((path, app), "", 0, found, reached)
        for path, facts in sorted(self.facts.items()):
            for name, prefix in facts.routers.items():
                if (path, name) not in reached and name not in facts.apps:
                    found.extend(self._own((path, name), "/" + ANY + prefix))
        return found

    def _mount(
        self,
        node: tuple[str, str],
        prefix: str,
        depth: int,
        found: list[Route],
        reached: set[tuple[str, str]],
    ) -> None:
        if depth > MAX_MOUNT_DEPTH:
            return
        reached.add(node)
        path, name = node
        own = self.facts[path].routers.get(name, "")
        found.extend(self._own(node, prefix + own))
        for include, where in self.includes.get(node, []):
            child = self._router(where, include.child)
            if child is not None and child != node:
                self._mount(child, prefix + own + include.prefix, depth + 1, found, reached)

    def _own(self, node: tuple[str, str], prefix: str) -> Iterator[Route]:
        path, name = node
        for route in self.facts[path].routes:
            if route.owner == name:
                full = _join_path(prefix, route.path)
                for method in route.methods:
                    yield Route(method, full, path, route.line)

    def _router(self, path: str, dotted: str, hops: int = 0) -> tuple[str, str] | None:
        """The (file, name) of the router or app a name or ``module.name`` denotes in a file."""
        facts = self.facts.get(path)
        head, _, rest = dotted.partition(".")
        if facts is not None and not rest and head in facts.routers:
            return path, head
        if hops >= MAX_IMPORT_HOPS:
            return None
        bound = self._imported(path, head)
        if bound is None:
            return None
        file, attribute = bound
        name = ".".join(part for part in (attribute, rest) if part)
        return self._router(file, name, hops + 1) if name else None

    def _imported(self, path: str, local: str) -> tuple[str, str] | None:
        """The (file, attribute) a local name is imported from; attribute "" for a module."""
        for item in self.project.python_module(path).imports:
            for name in item.names or (item.module,):
                bound = name if item.names else name.split(".")[0]
                alias = _aliases(self.project.files.get(path, ""), path).get((item.line, name))
                if (alias or bound) != local:
                    continue
                return self._binding(path, item.module, item.level, name, bool(item.names))
        return None

    def _binding(
        self, path: str, module: str, level: int, name: str, from_import: bool
    ) -> tuple[str, str] | None:
        if not from_import:
            found = self.resolver.local_module(path, module, level)
            return (found, "") if found else None
        submodule = ".".join(part for part in (module, name) if part)
        if (found := self.resolver.local_module(path, submodule, level)) is not None:
            return found, ""
        found = self.resolver.local_module(path, module, level)
        return (found, name) if found else None


def _mentions_fastapi(content: str) -> bool:
    return "APIRouter" in content or "FastAPI" in content or "include_router" in content


@functools.lru_cache(maxsize=512)
def _aliases(content: str, path: str) -> dict[tuple[int, str], str]:
    """``import x as y`` / ``from m import x as y``: (line, x) → y."""
    tree = _parse(path, content)
    found: dict[tuple[int, str], str] = {}
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.asname:
                    found[(node.lineno, alias.name)] = alias.asname
    return found


def _parse(path: str, content: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(content, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


@functools.lru_cache(maxsize=512)
def _route_facts(path: str, content: str) -> _RouteFacts:
    tree = _parse(path, content)
    if tree is None:
        return _RouteFacts()
    try:
        return _Collector(tree).facts()
    except RecursionError:
        return _RouteFacts()


class _Collector:
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.constants = _string_constants(tree)
        self.loops = _loop_values(tree)

    def facts(self) -> _RouteFacts:
        routers: dict[str, str] = {}
        apps: set[str] = set()
        routes: list[_Decorated] = []
        includes: list[_Include] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
                self._assignment(node, routers, apps)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                routes.extend(d for dec in node.decorator_list if (d := self._route(dec)))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                includes.extend(self._includes(node))
                if node.func.attr == "add_api_route" and (added := self._route(node)):
                    routes.append(added)
        for app in apps:
            routers[app] = ""
        return _RouteFacts(routers, frozenset(apps), tuple(routes), tuple(includes))

    def _assignment(
        self, node: ast.Assign | ast.AnnAssign, routers: dict[str, str], apps: set[str]
    ) -> None:
        assert isinstance(node.value, ast.Call)
        kind = _dotted(node.value.func).rsplit(".", 1)[-1]
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in (t.id for t in targets if isinstance(t, ast.Name)):
            if kind == "APIRouter":
                routers[target] = self._path(_keyword(node.value, "prefix"), "")
            elif kind == "FastAPI":
                apps.add(target)

    def _route(self, node: ast.expr) -> _Decorated | None:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            return None
        owner, attribute = _dotted(node.func.value), node.func.attr
        if not owner or "." in owner:
            return None
        path_node = node.args[0] if node.args else _keyword(node, "path")
        if attribute in HTTP_METHODS:
            methods: tuple[str, ...] = (attribute.upper(),)
        elif attribute in ("api_route", "add_api_route"):
            methods = _methods(_keyword(node, "methods"))
        else:
            return None
        return _Decorated(owner, methods, self._path(path_node, "/" + ANY), node.lineno)

    def _includes(self, node: ast.Call) -> Iterator[_Include]:
        assert isinstance(node.func, ast.Attribute)
        if node.func.attr != "include_router" or not node.args:
            return
        owner, child = _dotted(node.func.value), _dotted(node.args[0])
        if not owner or not child:
            return
        prefix = self._path(_keyword(node, "prefix"), "")
        head, _, rest = child.partition(".")
        for value in self.loops.get(head, [head]):
            name = ".".join(part for part in (value, rest) if part)
            yield _Include(owner, name, prefix, node.lineno)

    def _path(self, node: ast.expr | None, missing: str) -> str:
        """A path argument's value; the parts that are not literals become ``**``."""
        if node is None:
            return missing
        value = _string_value(node, self.constants)
        return missing if value is None else value


def _string_value(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        return constants.get(node.id, "/" + ANY)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                parts.append(part.value)
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                parts.append(constants.get(part.value.id, "/" + ANY))
            else:
                parts.append("/" + ANY)
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string_value(node.left, constants), _string_value(node.right, constants)
        return None if left is None or right is None else left + right
    return "/" + ANY


def _string_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if isinstance(node.value.value, str):
                constants.update(
                    (t.id, node.value.value) for t in targets if isinstance(t, ast.Name)
                )
    return constants


def _loop_values(tree: ast.Module) -> dict[str, list[str]]:
    """``for m in (a, b, c):`` → m: [a, b, c] (names or dotted names only)."""
    loops: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.target, ast.Name)
            and isinstance(node.iter, ast.Tuple | ast.List)
        ):
            values = [_dotted(item) for item in node.iter.elts]
            if all(values):
                loops[node.target.id] = values
    return loops


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return ""


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _methods(node: ast.expr | None) -> tuple[str, ...]:
    if node is None:
        return ("GET",)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        found = tuple(
            e.value.upper()
            for e in node.elts
            if isinstance(e, ast.Constant) and isinstance(e.value, str)
        )
        if len(found) == len(node.elts):
            return found
    return ("*",)


def _join_path(prefix: str, path: str) -> str:
    joined = re.sub(r"/{2,}", "/", f"{prefix}/{path}" if path else prefix)
    return (
        posixpath.normpath(joined) if joined.startswith("/") and ".." in joined else (joined or "/")
    )
