"""Cross-file checks: every project import reaches a file, and that file has the names.

Python through ``daemon.verify.python``; TS/JS here: relative specifiers, ``/`` from the
package root (and Vite's ``public/``), the aliases of vite.config and tsconfig ``paths`` as
``daemon.checks`` reads them; a specifier resolves to the file itself, to it with one of
``.ts .tsx .d.ts .js .jsx .mjs .cjs .json .css``, or to its ``index`` file, and ``./x.js`` to
``./x.ts`` as TypeScript does. Names are checked in scripts only: a default import needs a
default export, a named one an export of that name, found in the file or through its
``export * from`` chain (``MAX_STAR_DEPTH`` files deep). Files whose exports cannot be
known (CommonJS, syntax errors, a star re-export of a package) are taken to have any name.
Bare specifiers are packages: not this module's concern.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping

from daemon.checks import Problem
from daemon.checks.problem import _normal
from daemon.checks.project import _Project
from daemon.checks.scripts import _ScriptImports
from daemon.verify.links import ImportRef, Link
from daemon.verify.python import PythonResolver
from daemon.verify.scripts import ScriptImport, ScriptModule, is_script, parse_script

__all__ = ["ImportRef", "Link", "ProjectResolver", "cross_file_problems", "cross_imports"]

MAX_STAR_DEPTH = 8  # `export * from` files followed from one module
MAX_STAR_FILES = 64  # files one export lookup visits at most
_SUFFIXES = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".json", ".css")
_JS_SUFFIXES = (".js", ".jsx", ".mjs", ".cjs")
_TS_FOR_JS = (".ts", ".tsx", ".mts", ".cts")


def cross_file_problems(files: Mapping[str, str]) -> list[Problem]:
    """Each import of a missing project file (``import``) or of a name its file lacks
    (``name``), as a problem of the importing file."""
    resolver = ProjectResolver(files)
    return [p for link in resolver.links() if (p := link.problem()) is not None]


def cross_imports(files: Mapping[str, str]) -> list[ImportRef]:
    """Every import that reaches a project file, with the names it takes from there."""
    resolver = ProjectResolver(files)
    return [ref for link in resolver.links() if (ref := link.ref()) is not None]


class ProjectResolver:
    """Both languages' imports over one set of files."""

    def __init__(self, files: Mapping[str, str], project: _Project | None = None) -> None:
        self.project = project or _Project(dict(files))
        self.python = PythonResolver(self.project)
        self.scripts = ScriptResolver(self.project)

    def links(self) -> Iterator[Link]:
        for path in sorted(self.project.files):
            if path.endswith(".py"):
                yield from self.python.links(path)
            elif is_script(path):
                yield from self.scripts.links(path)


class ScriptResolver:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.files = project.files
        self.imports: _ScriptImports = project.scripts
        self._exports: dict[str, frozenset[str] | None] = {}

    def module(self, path: str) -> ScriptModule:
        if path in self.project.oversized:
            return ScriptModule(opaque=True)
        return parse_script(path, self.files[path])

    def links(self, path: str) -> Iterator[Link]:
        if path in self.project.oversized:
            return
        for item in self.module(path).imports:
            if (link := self._link(path, item)) is not None:
                yield link

    def _link(self, path: str, item: ScriptImport) -> Link | None:
        spec = re.split(r"[?#]", item.spec, maxsplit=1)[0]
        found = self.resolve(path, spec)
        if found is None:
            return None
        target, unresolved = found
        if target is None:
            return Link(path, item.line, item.spec, None, unresolved=unresolved)
        names = (("default",) if item.default else ()) + item.names
        if item.namespace or not names:
            names += ("*",)
        exported = self.exported(target) if is_script(target) else None
        if exported is None:
            return Link(path, item.line, item.spec, target, names)
        missing = tuple(n for n in names if n != "*" and n not in exported)
        return Link(path, item.line, item.spec, target, names, missing, tuple(exported))

    def resolve(self, path: str, spec: str) -> tuple[str | None, str] | None:
        """(the file, or None and why not) for a project specifier; None for a package."""
        if spec.startswith((".", "/")):
            if spec.startswith("/"):
                return self._under(self.imports._package_dir(path), spec, spec, public=True)
            return self._under(posixpath.dirname(path), spec, spec)
        aliased = [
            a
            for a in self.imports.aliases
            if (not a.scope or path.startswith(a.scope + "/")) and spec.startswith(a.prefix)
        ]
        for alias in aliased:
            if found := self.find(_normal(f"{alias.target}/{spec[len(alias.prefix) :]}")):
                return found, ""
        if named := [alias for alias in aliased if alias.prefix]:
            return self._under(named[0].target, "./" + spec[len(named[0].prefix) :], spec)
        if spec.startswith(("@/", "~/")):
            message = f"import '{spec}' uses the '{spec[:2]}' alias, which no vite.config or tsconfig declares"
            return None, message
        return None

    def _under(
        self, base: str, spec: str, label: str, public: bool = False
    ) -> tuple[str | None, str]:
        target = _normal(f"{base}/{spec.lstrip('/')}" if base else spec.lstrip("/"))
        if target == ".." or target.startswith("../"):
            return None, f"import '{label}' goes above the project"
        if found := self.find(target):
            return found, ""
        if public and (found := self.find(_normal(f"{base}/public/{spec.lstrip('/')}"))):
            return found, ""
        message = f"import '{label}' does not resolve (no {target}.* or {target}/index.*)"
        return None, message

    def find(self, target: str) -> str | None:
        """The file a specifier's path names, the way Vite and TypeScript look for it."""
        files = self.files
        if target in files:
            return target
        stem, suffix = posixpath.splitext(target)
        if suffix in _JS_SUFFIXES:
            for ts in _TS_FOR_JS:
                if stem + ts in files:
                    return stem + ts
        for candidate in (target, f"{target}/index"):
            for suffix in _SUFFIXES:
                if candidate + suffix in files:
                    return candidate + suffix
        return None

    def exported(self, path: str) -> frozenset[str] | None:
        """The names a script exports, through its ``export *`` chain; None if unknown."""
        if path not in self._exports:
            names, complete = self._collect(path, 0, set())
            if not complete:
                return names
            self._exports[path] = names
        return self._exports[path]

    def _collect(self, path: str, depth: int, seen: set[str]) -> tuple[frozenset[str] | None, bool]:
        """(the names, or None if unknown; whether no cycle cut the walk short)."""
        module = self.module(path)
        if module.opaque:
            return None, True
        names, complete = set(module.exports), True
        seen.add(path)
        for spec in module.star_specs:
            found = self.resolve(path, spec)
            target = found[0] if found else None
            if target is None or not is_script(target) or depth >= MAX_STAR_DEPTH:
                return None, True  # a package's or a missing file's names: unknown
            if target in seen or len(seen) >= MAX_STAR_FILES:
                complete = False
                continue
            more, done = self._collect(target, depth + 1, seen)
            if more is None:
                return None, True
            names.update(more - {"default"})
            complete = complete and done
        return frozenset(names), complete
