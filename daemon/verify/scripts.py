"""What one TS/TSX/JS/JSX file imports and exports, read with tree-sitter.

tree-sitter recovers from syntax errors instead of refusing the file, so a broken file still
yields the imports it states; its exports are then marked ``opaque`` (the names it really
exports cannot be known), and so are CommonJS modules. Parsing is linear in the file's size;
results are cached per (path, content), since a job's files are verified again each round.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import tree_sitter_typescript
from tree_sitter import Language, Node, Parser, Tree

from daemon.checks.scripts import SCRIPT_SUFFIXES

_TYPESCRIPT_SUFFIXES = (".ts", ".mts", ".cts")  # no JSX: `<T>x` is a type assertion there
_NAMED_DECLARATIONS = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "function_signature",
        "class_declaration",
        "abstract_class_declaration",
        "interface_declaration",
        "type_alias_declaration",
        "enum_declaration",
        "module",
        "internal_module",
    }
)
_VARIABLE_DECLARATIONS = frozenset({"lexical_declaration", "variable_declaration"})


@dataclass(frozen=True)
class ScriptImport:
    """One import of a module: ``names`` are the exported names asked for, as the target
    spells them (``import {a as b}`` asks for ``a``); ``kind`` is ``static``, ``side-effect``,
    ``dynamic`` (``import('x')``), ``require`` or ``re-export`` (``export {x} from``)."""

    line: int
    spec: str
    names: tuple[str, ...] = ()
    default: bool = False
    namespace: bool = False
    type_only: bool = False
    kind: str = "static"
    bindings: tuple[tuple[str, str], ...] = ()  # (local name, exported name) pairs


@dataclass(frozen=True)
class ReExport:
    """``export {original as name} from 'spec'``: the name is found in the other module."""

    line: int
    spec: str
    name: str
    original: str


@dataclass(frozen=True)
class ScriptModule:
    """A file's imports and exports; ``star_specs`` are the ``export * from`` modules whose
    exports (all but ``default``) are this file's too. ``opaque``: the exports are unknown."""

    imports: tuple[ScriptImport, ...] = ()
    exports: frozenset[str] = frozenset()
    reexports: tuple[ReExport, ...] = ()
    star_specs: tuple[str, ...] = ()
    opaque: bool = False
    locals: tuple[tuple[str, str], ...] = ()  # (exported name, local name) where plain

    @property
    def has_star(self) -> bool:
        return bool(self.star_specs)


# --- parsing -------------------------------------------------------------------------------


@functools.cache
def _language(typescript: bool) -> Language:
    grammar = tree_sitter_typescript.language_typescript if typescript else None
    return Language(grammar() if grammar else tree_sitter_typescript.language_tsx())


def is_script(path: str) -> bool:
    return path.endswith(SCRIPT_SUFFIXES)


@functools.lru_cache(maxsize=128)
def tree(path: str, content: str) -> Tree:
    """The syntax tree of a script; ``.ts`` files with the TypeScript grammar, the rest
    (``.tsx``, ``.js``, ``.jsx``: JSX may occur in any of them) with the TSX grammar."""
    parser = Parser(_language(path.endswith(_TYPESCRIPT_SUFFIXES)))
    return parser.parse(content.encode("utf-8", "replace"))


def text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def line(node: Node) -> int:
    return node.start_point.row + 1


def string_value(node: Node | None) -> str | None:
    """The value of a string literal, or of a template literal without substitutions."""
    if node is None:
        return None
    if node.type == "string":
        return "".join(text(c) for c in node.named_children if c.type != "escape_sequence")
    if node.type == "template_string" and not any(
        c.type == "template_substitution" for c in node.named_children
    ):
        return text(node)[1:-1]
    return None


def walk(node: Node) -> Iterator[Node]:
    """Every node below ``node``, in source order, without recursion (trees may be deep)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


# --- one file ------------------------------------------------------------------------------


def parse_script(path: str, content: str) -> ScriptModule:
    """The imports and exports of one script (cached per path and content)."""
    return _parse_script(path, content)


@functools.lru_cache(maxsize=2048)
def _parse_script(path: str, content: str) -> ScriptModule:
    root = tree(path, content).root_node
    facts = _Facts()
    for statement in root.named_children:
        if statement.type == "import_statement":
            facts.imports.append(_import(statement))
        elif statement.type == "export_statement":
            facts.export(statement)
        elif _is_commonjs_export(statement):
            facts.opaque = True
    facts.imports.extend(_calls(root))
    return ScriptModule(
        tuple(sorted(facts.imports, key=lambda item: item.line)),
        frozenset(facts.exports),
        tuple(facts.reexports),
        tuple(facts.stars),
        facts.opaque or root.has_error,
        tuple(facts.locals),
    )


class _Facts:
    def __init__(self) -> None:
        self.imports: list[ScriptImport] = []
        self.exports: set[str] = set()
        self.reexports: list[ReExport] = []
        self.stars: list[str] = []
        self.opaque = False
        self.locals: list[tuple[str, str]] = []

    def export(self, node: Node) -> None:
        source = string_value(node.child_by_field_name("source"))
        type_only = any(c.type == "type" for c in node.children)
        if any(c.type == "=" for c in node.children):  # `export = x`
            self.opaque = True
        elif any(c.type == "default" for c in node.children):
            self.exports.add("default")
            self._default_local(node)
        elif (declaration := node.child_by_field_name("declaration")) is not None:
            names = list(declared_names(declaration))
            self.exports.update(names)
            self.locals.extend((name, name) for name in names)
        for child in node.named_children:
            if child.type == "export_clause":
                self._clause(child, source, line(node), type_only)
            elif child.type == "namespace_export" and source is not None:
                self.exports.add(_last_name(child))
                self.imports.append(ScriptImport(line(node), source, (), namespace=True))
        if source is not None and any(c.type == "*" for c in node.children):
            self.stars.append(source)
            self.imports.append(ScriptImport(line(node), source, ("*",), kind="re-export"))

    def _clause(self, clause: Node, source: str | None, at: int, type_only: bool) -> None:
        originals = []
        for spec in clause.named_children:
            if spec.type != "export_specifier":
                continue
            original = _name(spec.child_by_field_name("name"))
            alias = _name(spec.child_by_field_name("alias")) or original
            self.exports.add(alias)
            if source is None:
                self.locals.append((alias, original))
            else:
                self.reexports.append(ReExport(at, source, alias, original))
                originals.append(original)
        if source is not None:
            names = tuple(name for name in originals if name != "default")
            default = "default" in originals
            self.imports.append(
                ScriptImport(at, source, names, default, type_only=type_only, kind="re-export")
            )

    def _default_local(self, node: Node) -> None:
        declaration = node.child_by_field_name("declaration")
        value = node.child_by_field_name("value")
        if declaration is not None and (name := declaration.child_by_field_name("name")):
            self.locals.append(("default", text(name)))
        elif value is not None and value.type == "identifier":
            self.locals.append(("default", text(value)))


def _import(node: Node) -> ScriptImport:
    source = string_value(node.child_by_field_name("source")) or ""
    type_only = any(c.type == "type" for c in node.children)
    clause = next((c for c in node.named_children if c.type == "import_clause"), None)
    if clause is None:
        return ScriptImport(line(node), source, kind="side-effect")
    names: list[str] = []
    bindings: list[tuple[str, str]] = []
    default = namespace = False
    for part in clause.named_children:
        if part.type == "identifier":
            default = True
            bindings.append((text(part), "default"))
        elif part.type == "namespace_import":
            namespace = True
        elif part.type == "named_imports":
            for spec in part.named_children:
                if spec.type == "import_specifier":
                    name = _name(spec.child_by_field_name("name"))
                    names.append(name)
                    bindings.append((text(spec.child_by_field_name("alias")) or name, name))
    return ScriptImport(
        line(node), source, tuple(names), default, namespace, type_only, bindings=tuple(bindings)
    )


def _calls(root: Node) -> Iterator[ScriptImport]:
    """``import('x')`` and ``require('x')`` anywhere in the file."""
    for node in walk(root):
        if node.type != "call_expression":
            continue
        function = node.child_by_field_name("function")
        if function is None or not (
            function.type == "import"
            or (function.type == "identifier" and text(function) == "require")
        ):
            continue
        arguments = node.child_by_field_name("arguments")
        first = arguments.named_children[0] if arguments and arguments.named_children else None
        if (spec := string_value(first)) is not None:
            kind = "dynamic" if function.type == "import" else "require"
            yield ScriptImport(line(node), spec, ("*",), namespace=True, kind=kind)


def declared_names(declaration: Node) -> Iterator[str]:
    """The names a declaration binds: a function's, a class's, each variable's."""
    if declaration.type == "ambient_declaration":  # `export declare const x: T`
        for child in declaration.named_children:
            yield from declared_names(child)
    elif declaration.type in _NAMED_DECLARATIONS:
        if (name := declaration.child_by_field_name("name")) is not None:
            yield text(name)
    elif declaration.type in _VARIABLE_DECLARATIONS:
        for declarator in declaration.named_children:
            if declarator.type == "variable_declarator":
                yield from _pattern_names(declarator.child_by_field_name("name"))


def _pattern_names(pattern: Node | None) -> Iterator[str]:
    if pattern is None:
        return
    if pattern.type == "identifier":
        yield text(pattern)
        return
    for node in walk(pattern):
        if node.type in ("shorthand_property_identifier_pattern", "identifier") and not (
            node.parent is not None
            and node.parent.type == "pair_pattern"
            and node.prev_sibling is None
        ):
            yield text(node)


def _is_commonjs_export(statement: Node) -> bool:
    if statement.type != "expression_statement" or not statement.named_children:
        return False
    expression = statement.named_children[0]
    if expression.type != "assignment_expression":
        return False
    left = text(expression.child_by_field_name("left"))
    return left.startswith(("module.exports", "exports."))


def _name(node: Node | None) -> str:
    """An identifier, or a string name (``import {"a-b" as c}``) without its quotes."""
    value = string_value(node)
    return value if value is not None else text(node)


def _last_name(node: Node) -> str:
    names = [c for c in node.named_children if c.type in ("identifier", "string")]
    return _name(names[-1]) if names else "*"
