"""TypeScript and JavaScript imports: each specifier of a script's imports, exports and
``require``/``import()`` calls resolves to a project file (relative, ``/`` from the package's
folder, or through a vite or tsconfig path alias), a Node built-in, an ambient
``declare module``, or a package its nearest package.json declares.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from daemon.checks.content import _DEPENDENCY_KEYS, _string_end, _strip_jsonc
from daemon.checks.problem import (
    Problem,
    _in_scope,
    _join,
    _normal,
    _parent,
)

if TYPE_CHECKING:
    from daemon.checks.project import _Project

MAX_AMBIENT_PATTERNS = 64  # wildcard ``declare module`` patterns tried per import
MAX_ALIASES = 64  # path aliases (vite, tsconfig) tried per import

SCRIPT_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_RESOLVE_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".d.ts", ".json", ".css", ".mjs", ".cjs")

# Left to right, a comment or a string is consumed whole, so an import written inside one
# (an example in a docstring, a code sample in a template literal) is never taken for code.
# Static imports and exports are statements, so they start a line or follow a ";"; that keeps
# prose in JSX text ("import your data from 'CSV'") out. A hand-written scanner, not one big
# regex: each character is looked at a bounded number of times, so a hostile file costs time
# in proportion to its length (an unterminated comment or template literal runs to the end,
# an unterminated quoted string to the end of its line).
_SCRIPT_STOP = re.compile(r"""[/'"`]|(?<![\w$.])(?:import|export|require)(?![\w$])""")
_STRING_STOPS = {
    "'": re.compile(r"['\\\n]"),
    '"': re.compile(r'["\\\n]'),
    "`": re.compile(r"[`\\]"),
}
_CLAUSE = re.compile(r"[\w$*{},\s]*")  # what may stand between `import` and `from`
_QUOTED_SPEC = re.compile(r"""\s*(['"])([^'"\n]+)\1""")
_CALL_SPEC = re.compile(r"""\s*\(\s*(['"`])([^'"`\n$]+)\1\s*\)""")
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
    lines = _Lines(content)
    for offset, spec in _ScriptScanner(content).specs():
        yield lines.at(offset), spec


class _Lines:
    """Line numbers of increasing offsets into one text, counted on from the last one."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._offset, self._line = 0, 1

    def at(self, offset: int) -> int:
        if offset < self._offset:
            self._offset, self._line = 0, 1
        self._line += self._text.count("\n", self._offset, offset)
        self._offset = offset
        return self._line


class _ScriptScanner:
    """The module specifiers of a script's imports, exports and require/import() calls."""

    def __init__(self, text: str) -> None:
        self.text = text
        # The run of clause characters last measured: (from, end, end of its last word).
        # Every keyword inside one run shares its end, so each run is measured once.
        self._run = (-1, -1, -1)

    def specs(self) -> Iterator[tuple[int, str]]:
        text, pos = self.text, 0
        while (found := _SCRIPT_STOP.search(text, pos)) is not None:
            start, pos = found.start(), found.end()
            char = text[start]
            if char == "/":
                pos = self._comment_end(start)
            elif char in _STRING_STOPS:
                pos = _string_end(text, pos, _STRING_STOPS[char])
            elif (hit := self._import(found[0], start, pos)) is not None:
                offset, spec, pos = hit
                yield offset, spec

    def _comment_end(self, start: int) -> int:
        text = self.text
        if text.startswith("//", start):
            end = text.find("\n", start)
        elif text.startswith("/*", start):
            end = text.find("*/", start + 2)
            end = end + 2 if end >= 0 else end
        else:
            return start + 1
        return end if end >= 0 else len(text)

    def _import(self, keyword: str, start: int, end: int) -> tuple[int, str, int] | None:
        """(offset of the specifier, the specifier, where scanning goes on), if any."""
        found = None
        if keyword != "require" and self._statement_start(start):
            found = self._static_from(end)
            if found is None and keyword == "import":
                found = _QUOTED_SPEC.match(self.text, end)
        if found is None and keyword != "export":
            found = _CALL_SPEC.match(self.text, end)
        return None if found is None else (found.start(2), found[2], found.end())

    def _statement_start(self, start: int) -> bool:
        text, pos = self.text, start
        while pos and text[pos - 1] in " \t":
            pos -= 1
        return not pos or text[pos - 1] in "\n;"

    def _static_from(self, end: int) -> re.Match[str] | None:
        """``import x from 'spec'`` / ``export {a} from "spec"``: the clause after the
        keyword is a run of clause characters ending in the word ``from``."""
        text = self.text
        start, run_end, word_end = self._run
        if not start <= end <= run_end:
            run_end = _CLAUSE.match(text, end).end()  # type: ignore[union-attr]  # matches ''
            word_end = run_end
            while word_end > end and text[word_end - 1].isspace():
                word_end -= 1
            self._run = (end, run_end, word_end)
        from_at = word_end - 4
        if from_at <= end or text[from_at:word_end] != "from" or _is_word(text[from_at - 1]):
            return None
        return _QUOTED_SPEC.match(text, run_end)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


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
        if path in self.project.oversized:
            return
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
            return Problem(path, where + message, kind="import")
        return self._package(path, spec, where)

    def _relative(
        self, path: str, base: str, spec: str, where: str, label: str = ""
    ) -> Problem | None:
        label = label or spec
        target = _normal(_join(base, spec.lstrip("/")))
        if target == ".." or target.startswith("../"):
            return Problem(path, f"{where}import '{label}' goes above the project", kind="import")
        if self._find(target):
            return None
        if spec.startswith("/") and self._find(_normal(_join(base, "public", spec.lstrip("/")))):
            return None  # Vite serves public/ at the root
        message = f"import '{label}' does not resolve (no {target}.* or {target}/index.*)"
        return Problem(path, where + message, kind="import")

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
            kind="dependency",
        )

    def _ambient(self, spec: str) -> bool:
        names, patterns = self.ambient_modules
        return spec in names or any(pattern.match(spec) for pattern in patterns)

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
        for path, content in self.project.readable():
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
    def ambient_modules(self) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
        """Modules that ``declare module`` makes known: exact names, and (a bounded number of)
        wildcard patterns such as ``*.svg``."""
        names = {
            name
            for path, content in self.project.readable()
            if path.endswith(".ts")
            for name in _AMBIENT.findall(content)
        }
        patterns = sorted(name for name in names if any(c in name for c in "*?["))
        compiled = tuple(re.compile(fnmatch.translate(p)) for p in patterns[:MAX_AMBIENT_PATTERNS])
        return frozenset(names), compiled

    @cached_property
    def aliases(self) -> list[_Alias]:
        aliases: list[_Alias] = []
        for path, content in self.project.readable():
            name = posixpath.basename(path)
            if re.fullmatch(r"vite\.config\.[mc]?[jt]s", name):
                aliases.extend(_vite_aliases(path, content))
            elif re.fullmatch(r"[tj]sconfig[^/]*\.json", name):
                aliases.extend(_tsconfig_aliases(path, content))
        return aliases[:MAX_ALIASES]


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
