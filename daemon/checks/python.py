"""Python imports: each import of a file resolves to a module of the project, the standard
library, or a declared distribution.

A source root is the parent of each outermost package, the directory of each script, and the
parent of an ``app/main.py``-style directory; roots above the importing file are tried first.
An import guarded by ``except ImportError`` is optional and not checked; a module with
``from x import *`` or a module ``__getattr__`` may define any name.
"""

from __future__ import annotations

import ast
import functools
import posixpath
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from daemon.checks.problem import Problem, _in_scope, _join, _parent
from daemon.checks.providers import _PROVIDERS, _is_requirements, _providers, _requirements

if TYPE_CHECKING:
    from daemon.checks.project import _Project


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
            except (ValueError, RecursionError, MemoryError) as exc:  # NUL, absurd nesting
                return cls(f"line 1: {exc or 'too deeply nested to parse'}")
        return cls(None, tuple(_python_imports(tree.body)), _bound_names(tree))


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
            names.update(_dunder_all(node))
            continue
        elif isinstance(node, ast.For | ast.AsyncFor | ast.With | ast.AsyncWith):
            targets = (
                [node.target]
                if isinstance(node, ast.For | ast.AsyncFor)
                else [item.optional_vars for item in node.items if item.optional_vars]
            )
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for field in _BLOCKS:
            statements.extend(getattr(node, field, None) or ())
    return frozenset(names)


def _dunder_all(node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> Iterator[str]:
    """The names ``__all__`` lists: a module promises them, whatever binds them."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if node.value is None or not any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in targets
    ):
        return
    if isinstance(node.value, ast.List | ast.Tuple):
        for item in node.value.elts:
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                yield item.value


class _PythonImports:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files
        self._roots_of_dir: dict[str, list[str]] = {}

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
                    kind="import",
                )
            base = _parent(base)
        miss = self._resolve(base, item)
        if miss is None:
            return None
        return Problem(path, f"line {item.line}: {miss}", kind="import")

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
            return Problem(path, f"line {item.line}: {first_miss}", kind="import")
        if self.requirements is None:
            return None
        return Problem(path, f"line {item.line}: {self._undeclared(path, top)}", kind="dependency")

    def _resolve(self, base: str, item: _PyImport) -> str | None:
        """Why the import does not resolve under ``base``; None when it does."""
        module_path = _join(base, *item.module.split(".")) if item.module else base
        kind = self._kind(module_path)
        if kind is None:
            return (
                f"import '{item.label}' does not resolve "
                f"(no {module_path}.py or {module_path}/__init__.py)"
            )
        if kind == "module":
            return None
        for name in item.names:
            if miss := self._name_miss(module_path, kind, item, name):
                return miss
        return None

    def _name_miss(self, package: str, kind: str, item: _PyImport, name: str) -> str | None:
        if name == "*" or self._kind(_join(package, name)) is not None:
            return None
        init = _join(package, "__init__.py")
        if kind == "package":
            defined = self.project.python_module(init).defined
            if defined is None or name in defined or name.startswith("__"):
                return None
            message = f"cannot import '{name}' from '{item.label}': no module {package}/{name}.py"
            return f"{message} and {init} does not define it"
        return f"cannot import '{name}' from '{item.label}': no module {_join(package, name)}.py"

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
        directory = _parent(path)
        if directory not in self._roots_of_dir:  # the same for every file of a directory
            above = [r for r in self.roots if _in_scope(directory, r) or r == directory]
            above.sort(key=len, reverse=True)
            others = sorted(r for r in self.roots if r not in above)
            self._roots_of_dir[directory] = above + others
        return self._roots_of_dir[directory]

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
        found = {p: _requirements(p, c) for p, c in self.project.readable() if _is_requirements(p)}
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
