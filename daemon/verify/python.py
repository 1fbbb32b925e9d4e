"""Python imports resolved against the project's files, with ``ast``.

The source roots, the module-or-package test and the parse cache are those of
``daemon.checks.python`` (one parse per file version serves both). An absolute import whose
top module is no part of the project is a package's (``daemon.checks.python`` judges
declared dependencies); an import guarded by ``except ImportError`` is optional and not
followed.

What a module defines is its top-level bindings (``def``, ``class``, assignments, imports,
which re-export, loop and ``with`` targets, the names in ``__all__``); a module with
``from x import *``, a module ``__getattr__`` or a syntax error may define anything.
``from pkg import name`` finds ``name`` as a submodule file first, then in ``__init__.py``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from daemon.checks.problem import _join
from daemon.checks.project import _Project
from daemon.checks.python import _PyImport, _PythonImports
from daemon.verify.links import Link


def module_file(module_path: str, kind: str | None) -> str | None:
    """The file of a module path (``app/models``) of a given kind, if it has one."""
    if kind == "module":
        return module_path + ".py"
    if kind == "package":
        return _join(module_path, "__init__.py")
    return None


class PythonResolver:
    """Every import of a Python file as a ``Link``: the file it reaches, the names it lacks."""

    def __init__(self, project: _Project) -> None:
        self.project = project
        self.imports: _PythonImports = project.python

    def links(self, path: str) -> Iterator[Link]:
        if path in self.project.oversized:
            return
        for item in self.project.python_module(path).imports:
            if not item.optional:
                yield from self._links(path, item)

    def local_module(self, path: str, module: str, level: int = 0) -> str | None:
        """The project file of a module named in ``path`` (``app.models.car``, or relative
        with ``level`` dots), if the project has it."""
        item = _PyImport(0, level, module, (), False)
        for base in self._bases(path, item):
            module_path = _join(base, *module.split(".")) if module else base
            if (found := module_file(module_path, self.imports._kind(module_path))) is not None:
                return found
        return None

    def _links(self, path: str, item: _PyImport) -> Iterator[Link]:
        outcomes = [list(self._under(path, base, item)) for base in self._bases(path, item)]
        for outcome in outcomes:  # the first root where it all resolves, else the first
            if all(link.unresolved is None and not link.missing for link in outcome):
                yield from outcome
                return
        if outcomes:
            yield from outcomes[0]

    def _bases(self, path: str, item: _PyImport) -> list[str]:
        """Where the import's module is looked for: the package it is relative to, or each
        source root holding its top module (none: not a project module)."""
        if item.level:
            base = posixpath.dirname(path)
            for _ in range(item.level - 1):
                if not base:
                    return []  # above the project: daemon.checks says so
                base = posixpath.dirname(base)
            return [base]
        top = item.module.split(".")[0]
        return [r for r in self.imports._roots_for(path) if self.imports._has_top(r, top)]

    def _under(self, path: str, base: str, item: _PyImport) -> Iterator[Link]:
        module_path = _join(base, *item.module.split(".")) if item.module else base
        kind = self.imports._kind(module_path)
        label = item.label or "."
        if kind is None:
            message = (
                f"import '{label}' does not resolve (no {module_path}.py "
                f"or {module_path}/__init__.py)"
            )
            yield Link(path, item.line, label, None, unresolved=message)
            return
        target = module_file(module_path, kind)
        if not item.names:  # import a.b.c
            if target is not None:
                yield Link(path, item.line, label, target, ("*",))
            return
        yield from self._names(path, item, label, module_path, target)

    def _names(
        self, path: str, item: _PyImport, label: str, module_path: str, target: str | None
    ) -> Iterator[Link]:
        found: list[str] = []
        missing: list[str] = []
        defined = self.project.python_module(target).defined if target else frozenset()
        for name in item.names:
            submodule = _join(module_path, name)
            sub_kind = self.imports._kind(submodule)
            if name != "*" and sub_kind is not None:
                if (sub_file := module_file(submodule, sub_kind)) is not None:
                    yield Link(path, item.line, f"{label}.{name}", sub_file, ("*",))
            elif target is None and name != "*":
                message = f"cannot import '{name}' from '{label}': no module {submodule}.py"
                yield Link(path, item.line, label, None, unresolved=message)
            elif name == "*" or defined is None or name in defined or name.startswith("__"):
                found.append(name)
            else:
                missing.append(name)
        if target is not None and (found or missing):
            offered = tuple(sorted(n for n in defined or () if not n.startswith("_")))
            yield Link(
                path,
                item.line,
                label,
                target,
                tuple(found + missing),
                tuple(missing),
                offered,
                verb="defines",
            )
