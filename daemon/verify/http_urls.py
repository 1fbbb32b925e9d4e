"""The value of a URL expression in a frontend script, and where the URL points.

A URL is a string, a template literal (``${id}`` becomes a parameter segment, a leading
unknown ``${API}`` any prefix) or a ``+`` of such; string constants of the file (``const
BASE = import.meta.env.VITE_API ?? '/api'`` takes the fallback) are read. A URL on this app
is a path: absolute URLs count only when they name localhost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tree_sitter import Node

from daemon.verify.routes import ANY
from daemon.verify.scripts import string_value, text

_ABSOLUTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)  # a scheme: not a path
_LOCAL_HOST = re.compile(r"^https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0)(?::\d+)?", re.I)
_PARAM = "{param}"


def _located(method: str, url: str) -> tuple[str, str] | None:
    if _ABSOLUTE.match(url):
        local = _LOCAL_HOST.match(url)
        if local is None:
            return None
        url = url[local.end() :] or "/"
    if not url.startswith("/"):
        return None  # relative to the page, or not a URL at all
    return method.upper(), url


def _join(base: str, url: str) -> str:
    if _ABSOLUTE.match(url) or not base:
        return url
    return base.rstrip("/") + "/" + url.lstrip("/") if url else base


def _constants(root: Node) -> dict[str, str]:
    """Top-level ``const NAME = 'x'`` (also ``env.X ?? 'x'`` and ``env.X || 'x'``)."""
    constants: dict[str, str] = {}
    for statement in root.named_children:
        declaration = statement
        if statement.type == "export_statement":
            declaration = statement.child_by_field_name("declaration") or statement
        if declaration.type not in ("lexical_declaration", "variable_declaration"):
            continue
        for declarator in declaration.named_children:
            name, value = (
                declarator.child_by_field_name("name"),
                declarator.child_by_field_name("value"),
            )
            if name is None or value is None or name.type != "identifier":
                continue
            if (found := _url(value, constants, {})) is not None:
                constants[text(name)] = found
    return constants


def _url(
    node: Node | None,
    constants: Mapping[str, str],
    params: Mapping[str, int],
    keep_params: bool = False,
) -> str | None:
    """A URL expression's value: substitutions become ``{param}`` segments, or ``**`` where
    they lead; with ``keep_params``, a function parameter becomes ``\\x00\\x01i\\x01``."""
    if node is None:
        return None
    if (literal := string_value(node)) is not None:
        return literal
    if node.type == "parenthesized_expression" and node.named_children:
        return _url(node.named_children[0], constants, params, keep_params)
    if node.type in ("identifier", "shorthand_property_identifier"):
        name = text(node)
        if keep_params and name in params:
            return f"\x01{params[name]}\x01\x00"
        return constants.get(name)
    if node.type == "binary_expression":
        operator = text(node.child_by_field_name("operator"))
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        if operator in ("??", "||"):
            return string_value(right) if string_value(right) is not None else None
        if operator == "+":
            a = _url(left, constants, params, keep_params)
            b = _url(right, constants, params, keep_params)
            if a is None and b is not None:
                a = "/" + ANY if _leading(b) else _PARAM
            if b is None and a is not None:
                b = _PARAM
            return None if a is None or b is None else a + b
        return None
    if node.type == "template_string":
        return _template(node, constants, params, keep_params)
    return None


def _param_name(node: Node | None) -> str:
    """``{id}`` for ``${id}`` or ``${car.id}``: the name a model recognises in a message."""
    words = re.findall(r"\w+", text(node)) if node is not None else []
    return (
        f"{{{words[-1]}}}"
        if words
        and node is not None
        and node.type
        in (
            "identifier",
            "member_expression",
        )
        else _PARAM
    )


def _leading(rest: str) -> bool:
    return rest.startswith("/")


def _template(
    node: Node, constants: Mapping[str, str], params: Mapping[str, int], keep_params: bool
) -> str:
    parts: list[str] = []
    for child in node.named_children:
        if child.type == "template_substitution":
            inner = child.named_children[0] if child.named_children else None
            value = _url(inner, constants, params, keep_params) if inner is not None else None
            if value is None:
                value = "/" + ANY if not "".join(parts) else _param_name(inner)
            parts.append(value)
        elif child.type == "string_fragment":
            parts.append(text(child))
        elif child.type == "escape_sequence":
            parts.append(text(child)[1:])
    return "".join(parts)
