"""One line per export of a file, with its exact signature, to show in a prompt.

A phase that uses another phase's files needs their interfaces, not their bodies: a
function's parameters and return type, a model's fields, a type's whole body (shortened
past ``MAX_LINE_CHARS``), an object of functions with each member's signature. Bounded in
lines and characters; a file that does not parse gives what could be read of it.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator

from tree_sitter import Node

from daemon.verify.scripts import is_script, text, tree

MAX_LINE_CHARS = 300
MAX_LINES = 60
MAX_TOTAL_CHARS = 8000
MAX_MEMBERS = 30  # fields or methods listed of one class or object
_FUNCTIONS = ("arrow_function", "function_expression", "function")


def signatures(path: str, content: str) -> list[str]:
    """The exports of a Python or TS/JS file as one line each, most important first."""
    if path.endswith(".py"):
        lines = _python(path, content)
    elif is_script(path):
        lines = _script(path, content)
    else:
        return []
    kept: list[str] = []
    total = 0
    for line in lines:
        line = _short(line)
        if len(kept) >= MAX_LINES or total + len(line) > MAX_TOTAL_CHARS:
            break
        kept.append(line)
        total += len(line)
    return kept


def _short(line: str, limit: int = MAX_LINE_CHARS) -> str:
    line = re.sub(r"\s+", " ", line).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- Python --------------------------------------------------------------------------------


def _python(path: str, content: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = ast.parse(content, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return
    try:
        for node in module.body:
            yield from _python_statement(node)
    except RecursionError:  # ast.unparse of absurdly nested expressions
        return


def _python_statement(node: ast.stmt) -> Iterator[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
        yield _def(node)
    elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
        yield _class(node)
    elif isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_")]
        if names and node.value is not None:
            annotation = (
                f": {ast.unparse(node.annotation)}" if isinstance(node, ast.AnnAssign) else ""
            )
            value = _short(ast.unparse(node.value), 120)
            yield f"{' = '.join(names)}{annotation} = {value}"


def _def(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix} {node.name}({_arguments(node.args)}){returns}"


def _arguments(args: ast.arguments) -> str:
    """Parameters as written by hand: ``token: str = Depends(oauth2_scheme)``."""
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    parts = [_argument(a, d) for a, d in zip(positional, [*defaults, *args.defaults], strict=True)]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg is not None:
        parts.append("*" + _argument(args.vararg, None))
    elif args.kwonlyargs:
        parts.append("*")
    parts.extend(_argument(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True))
    if args.kwarg is not None:
        parts.append("**" + _argument(args.kwarg, None))
    return ", ".join(parts)


def _argument(arg: ast.arg, default: ast.expr | None) -> str:
    shown = arg.arg + (f": {ast.unparse(arg.annotation)}" if arg.annotation else "")
    if default is not None:
        shown += f" = {ast.unparse(default)}" if arg.annotation else f"={ast.unparse(default)}"
    return shown


def _class(node: ast.ClassDef) -> str:
    bases = ", ".join(ast.unparse(b) for b in [*node.bases, *node.keywords])
    fields, methods = [], []
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            fields.append(f"{item.target.id}: {ast.unparse(item.annotation)}")
        elif isinstance(item, ast.Assign) and isinstance(item.value, ast.Call):
            fields.extend(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            methods.append(item.name)
    line = f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    if fields:
        line += " " + ", ".join(fields[:MAX_MEMBERS])
    if methods:
        line += ("; " if fields else " ") + "methods " + ", ".join(methods[:MAX_MEMBERS])
    return line


# --- TS / JS -------------------------------------------------------------------------------


def _script(path: str, content: str) -> Iterator[str]:
    root = tree(path, content).root_node
    for statement in root.named_children:
        if statement.type == "export_statement":
            yield from _export(statement)


def _export(node: Node) -> Iterator[str]:
    default = any(c.type == "default" for c in node.children)
    keyword = "export default" if default else "export"
    declaration = node.child_by_field_name("declaration")
    value = node.child_by_field_name("value")
    if declaration is not None:
        yield from _declaration(keyword, declaration)
    elif value is not None:
        yield f"{keyword} {_function_or_text(value)}"
    else:
        yield text(node).rstrip(";")


def _declaration(keyword: str, node: Node) -> Iterator[str]:
    kind = node.type
    if kind in ("function_declaration", "generator_function_declaration", "function_signature"):
        yield f"{keyword} {_function_head(node)}"
    elif kind in ("class_declaration", "abstract_class_declaration"):
        yield f"{keyword} {_class_head(node)}"
    elif kind in ("lexical_declaration", "variable_declaration"):
        const = text(node.child_by_field_name("kind")) or "const"
        for declarator in node.named_children:
            if declarator.type == "variable_declarator":
                yield f"{keyword} {const} {_variable(declarator)}"
    else:  # interfaces, types, enums, namespaces: the whole (shortened) text
        yield f"{keyword} {text(node)}"


def _function_head(node: Node) -> str:
    """``function Name(params): Return`` without the body."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    head = (node.text or b"")[: end - node.start_byte].decode("utf-8", "replace")
    return head.rstrip().rstrip("{").rstrip()


def _class_head(node: Node) -> str:
    body = node.child_by_field_name("body")
    members = []
    for member in body.named_children if body is not None else ():
        name = member.child_by_field_name("name")
        if name is not None:
            members.append(text(name))
    return f"{_function_head(node)} {{ {', '.join(members[:MAX_MEMBERS])} }}"


def _variable(declarator: Node) -> str:
    name = text(declarator.child_by_field_name("name"))
    annotation = text(declarator.child_by_field_name("type"))
    value = declarator.child_by_field_name("value")
    head = f"{name}{annotation}"
    if value is None:
        return head
    if value.type == "object" and (members := list(_members(value))):
        return f"{head} = {{ {', '.join(members[:MAX_MEMBERS])} }}"
    return f"{head} = {_function_or_text(value)}"


def _members(obj: Node) -> Iterator[str]:
    """``name(params): Return`` of each function member of an object literal."""
    for member in obj.named_children:
        if member.type == "method_definition":
            yield _function_head(member)
        elif member.type == "pair":
            value = member.child_by_field_name("value")
            if value is not None and value.type in _FUNCTIONS:
                yield f"{text(member.child_by_field_name('key'))}{_arrow_signature(value)}"


def _function_or_text(value: Node) -> str:
    if value.type in _FUNCTIONS:
        return (
            f"{_arrow_signature(value)} => …"
            if value.type == "arrow_function"
            else _function_head(value)
        )
    return _short(text(value), 120)


def _arrow_signature(node: Node) -> str:
    params = node.child_by_field_name("parameters") or node.child_by_field_name("parameter")
    shown = text(params)
    if params is not None and params.type == "identifier":
        shown = f"({shown})"
    returns = text(node.child_by_field_name("return_type"))
    return f"{shown}{returns}"
