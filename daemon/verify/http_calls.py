"""The HTTP calls a frontend makes, read from its scripts with tree-sitter.

Understood: ``fetch(url, {method: 'POST'})``; ``axios.get/post/put/patch/delete/head/
options(url)``, ``axios(config)``, ``axios(url, config)``, ``axios.request(config)``; the same
on an instance (``const api = axios.create({baseURL: '/api'})``, also imported from another
file), whose baseURL is joined in front; and a hand-written wrapper: a function whose body
makes one of those calls with a URL built from one of its parameters (``path``,
``${BASE}${path}``, ``BASE + path``), called like ``request('GET', '/cars')`` (the method a
parameter), ``request<T>('/cars', {method: 'POST'})`` (an options parameter, spread into the
call or destructured), or with the method fixed inside; wrappers of wrappers defined earlier
in the same file too. A URL is a string, a template literal (``${id}`` becomes a parameter
segment, a leading unknown ``${API}`` any prefix) or a ``+`` of such; string constants of the
file (``const BASE = import.meta.env.VITE_API ?? '/api'`` takes the fallback) are read.

Not understood, and skipped (never reported): methods of an object of wrappers
(``api.cars.list()``), URLs from function calls or variables other than constants, calls
whose method is not a literal, clients other than fetch and axios, and absolute URLs to
hosts other than localhost.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tree_sitter import Node

from daemon.checks.project import _Project
from daemon.verify.http_urls import _constants, _join, _located, _url
from daemon.verify.resolve import ScriptResolver
from daemon.verify.routes import ANY, HTTP_METHODS, HttpCall
from daemon.verify.scripts import is_script, line, parse_script, string_value, text, tree, walk

MAX_CLIENT_HOPS = 5  # re-exports followed to find an imported client or wrapper


@dataclass(frozen=True)
class _Wrapper:
    """A function that calls HTTP with its parameter ``url_at`` as the path after ``base``.
    The method: ``method`` if fixed; else the string argument ``method_at``, or the
    ``method`` property of the options argument ``options_at``; else ``default``."""

    url_at: int
    base: str
    method: str | None = None
    method_at: int | None = None
    options_at: int | None = None
    default: str = "GET"


@dataclass
class _Scope:
    """What names mean in one file: string constants, axios names, instances, wrappers."""

    constants: dict[str, str]
    axios: set[str]
    instances: dict[str, str]
    wrappers: dict[str, _Wrapper]


def http_calls(files: Mapping[str, str], project: _Project | None = None) -> list[HttpCall]:
    """Every HTTP call of the project's scripts outside the backend that it understands."""
    project = project or _Project(dict(files))
    reader = _Reader(project)
    calls: list[HttpCall] = []
    for path, _ in sorted(project.readable()):
        if is_script(path) and not _is_config(path):
            calls.extend(reader.calls(path))
    return [call for call in calls if not _public_file(project.files, call)]


def _is_config(path: str) -> bool:
    return bool(re.search(r"(?:^|/)[\w.-]*\.config\.[mc]?[jt]s$", path))


def _public_file(files: Mapping[str, str], call: HttpCall) -> bool:
    tail = call.path.split("?")[0].lstrip("/")
    return any(path.endswith("public/" + tail) for path in files) if "." in tail else False


class _Reader:
    def __init__(self, project: _Project) -> None:
        self.project = project
        self.resolver = ScriptResolver(project)
        self._scopes: dict[str, _Scope] = {}

    def calls(self, path: str) -> Iterator[HttpCall]:
        root = tree(path, self.project.files[path]).root_node
        scope = self.scope(path)
        for node in walk(root):
            if node.type == "call_expression" and (found := self._call(path, scope, node)):
                method, url = found
                yield HttpCall(method, url, path, line(node))

    def scope(self, path: str) -> _Scope:
        if path not in self._scopes:
            self._scopes[path] = _Scope({}, {"axios"}, {}, {})  # a cycle sees it empty
            self._scopes[path] = self._read_scope(path)
        return self._scopes[path]

    def _read_scope(self, path: str) -> _Scope:
        content = self.project.files[path]
        root = tree(path, content).root_node
        scope = _Scope(_constants(root), {"axios"}, {}, {})
        self._imports(path, scope)
        for node in walk(root):
            if node.type == "variable_declarator":
                name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
                if name is None or value is None or name.type != "identifier":
                    continue
                if (base := self._instance(scope, value)) is not None:
                    scope.instances[text(name)] = base
                elif value.type in ("arrow_function", "function_expression", "function"):
                    self._wrapper(scope, text(name), value)
            elif node.type == "function_declaration":
                name = node.child_by_field_name("name")
                if name is not None:
                    self._wrapper(scope, text(name), node)
        return scope

    def _imports(self, path: str, scope: _Scope) -> None:
        for item in parse_script(path, self.project.files[path]).imports:
            if item.spec == "axios":
                scope.axios.update(local for local, name in item.bindings if name == "default")
                continue
            found = self.resolver.resolve(path, item.spec)
            if not found or found[0] is None or not is_script(found[0]):
                continue
            for local, name in item.bindings:
                self._bind(scope, local, found[0], name, 0)

    def _bind(self, scope: _Scope, local: str, target: str, exported: str, hops: int) -> None:
        if hops > MAX_CLIENT_HOPS or target in self.project.oversized:
            return
        module = parse_script(target, self.project.files[target])
        inner = dict(module.locals).get(exported)
        other = self.scope(target)
        if inner is not None and inner in other.instances:
            scope.instances[local] = other.instances[inner]
        elif inner is not None and inner in other.wrappers:
            scope.wrappers[local] = other.wrappers[inner]
        else:
            for again in module.reexports:
                if again.name == exported:
                    found = self.resolver.resolve(target, again.spec)
                    if found and found[0] and is_script(found[0]):
                        self._bind(scope, local, found[0], again.original, hops + 1)

    def _instance(self, scope: _Scope, value: Node) -> str | None:
        """The baseURL of ``axios.create({...})``; None when the value is not that."""
        if value.type != "call_expression":
            return None
        function = value.child_by_field_name("function")
        if function is None or function.type != "member_expression":
            return None
        owner = text(function.child_by_field_name("object"))
        if owner not in scope.axios or text(function.child_by_field_name("property")) != "create":
            return None
        config = _argument(value, 0)
        base = _property(config, "baseURL") if config is not None else None
        return "" if base is None else _url(base, scope.constants, {}) or "/" + ANY

    def _wrapper(self, scope: _Scope, name: str, function: Node) -> None:
        params = _parameters(function)
        body = function.child_by_field_name("body")
        if not params or body is None:
            return
        for node in walk(body):
            if node.type == "call_expression" and (found := self._inner(scope, node, params)):
                scope.wrappers[name] = found
                return

    def _inner(self, scope: _Scope, call: Node, params: list[_Param]) -> _Wrapper | None:
        """The wrapper a function is, if this call in its body makes its HTTP request."""
        shape = self._shape(scope, call)
        if shape is None:
            return None
        url_node, method, options, base = shape
        names = {p.name: i for i, p in enumerate(params) if p.name}
        pieces = _url(url_node, scope.constants, names, keep_params=True) if url_node else None
        if pieces is None or "\x00" not in pieces or not pieces.endswith("\x00"):
            return None
        index = int(pieces.rsplit("\x01", 2)[-2]) if "\x01" in pieces else -1
        prefix = pieces.split("\x01")[0]
        if index < 0 or "\x00" in prefix:
            return None
        return _wrapper_method(_join(base, prefix), index, method, options, params, names)

    def _call(self, path: str, scope: _Scope, call: Node) -> tuple[str, str] | None:
        shape = self._shape(scope, call)
        if shape is not None:
            url_node, method, options, base = shape
            if method is None and options is not None:
                method = _options_method(options, "GET")
            url = _url(url_node, scope.constants, {}) if url_node is not None else None
            if method is None or url is None:
                return None
            return _located(method, _join(base, url))
        function = call.child_by_field_name("function")
        if function is None or function.type != "identifier":
            return None
        wrapper = scope.wrappers.get(text(function))
        return _wrapped(wrapper, call, scope) if wrapper else None

    def _shape(
        self, scope: _Scope, call: Node
    ) -> tuple[Node | None, str | None, Node | None, str] | None:
        """(url node, method if fixed, options node, base) of a fetch or axios call."""
        function = call.child_by_field_name("function")
        if function is None:
            return None
        first, second = _argument(call, 0), _argument(call, 1)
        if function.type == "identifier" or text(function) == "window.fetch":
            name = text(function).removeprefix("window.")
            if name == "fetch":
                return first, None if second is not None else "GET", second, ""
            base = scope.instances.get(name, "" if name in scope.axios else None)
            if base is None:
                return None
            if first is not None and first.type == "object":
                return _property(first, "url"), None, first, base
            return first, None, second, base
        if function.type != "member_expression":
            return None
        owner = text(function.child_by_field_name("object"))
        verb = text(function.child_by_field_name("property"))
        base = scope.instances.get(owner, "" if owner in scope.axios else None)
        if base is None:
            return None
        if verb in HTTP_METHODS:
            return first, verb.upper(), None, base
        if verb == "request" and first is not None and first.type == "object":
            return _property(first, "url"), None, first, base
        return None


@dataclass(frozen=True)
class _Param:
    name: str  # "" for a destructured parameter
    keys: frozenset[str]  # a destructured parameter's property names
    default: str | None  # a string default (of the parameter, or of its `method` property)


def _parameters(function: Node) -> list[_Param]:
    node = function.child_by_field_name("parameters")
    if node is None:
        single = function.child_by_field_name("parameter")  # `path => ...`
        return [_Param(text(single), frozenset(), None)] if single is not None else []
    params = []
    for param in node.named_children:
        pattern = param.child_by_field_name("pattern") or param
        value = param.child_by_field_name("value")
        default = string_value(value)
        if pattern.type == "identifier":
            params.append(_Param(text(pattern), frozenset(), default))
        elif pattern.type == "object_pattern":
            keys, method_default = _pattern_keys(pattern)
            params.append(_Param("", keys, method_default))
        else:
            params.append(_Param("", frozenset(), None))
    return params


def _pattern_keys(pattern: Node) -> tuple[frozenset[str], str | None]:
    keys, default = set(), None
    for child in pattern.named_children:
        if child.type == "shorthand_property_identifier_pattern":
            keys.add(text(child))
        elif child.type == "object_assignment_pattern":
            key = text(child.child_by_field_name("left"))
            keys.add(key)
            if key == "method":
                default = string_value(child.child_by_field_name("right"))
    return frozenset(keys), default


def _wrapper_method(
    base: str,
    url_at: int,
    method: str | None,
    options: Node | None,
    params: list[_Param],
    names: dict[str, int],
) -> _Wrapper | None:
    if method is not None:
        return _Wrapper(url_at, base, method=method)
    if options is None:
        return _Wrapper(url_at, base, method="GET")
    if options.type == "identifier" and text(options) in names:
        return _Wrapper(url_at, base, options_at=names[text(options)])
    if options.type != "object":
        return None
    value = _property(options, "method")
    if value is not None and (literal := string_value(value)) is not None:
        return _Wrapper(url_at, base, method=literal.upper())
    if value is not None and value.type in ("identifier", "shorthand_property_identifier"):
        source = text(value)
        if source in names:
            at = names[source]
            return _Wrapper(url_at, base, method_at=at, default=params[at].default or "GET")
        for at, param in enumerate(params):
            if source in param.keys:
                return _Wrapper(url_at, base, options_at=at, default=param.default or "GET")
        return None
    for child in options.named_children:
        if child.type == "spread_element" and (spread := text(child.named_children[0])) in names:
            return _Wrapper(url_at, base, options_at=names[spread])
    return _Wrapper(url_at, base, method="GET") if value is None else None


def _wrapped(wrapper: _Wrapper, call: Node, scope: _Scope) -> tuple[str, str] | None:
    url_node = _argument(call, wrapper.url_at)
    url = _url(url_node, scope.constants, {}) if url_node is not None else None
    if url is None:
        return None
    method: str | None = wrapper.method
    if method is None and wrapper.method_at is not None:
        argument = _argument(call, wrapper.method_at)
        method = wrapper.default if argument is None else string_value(argument)
    elif method is None and wrapper.options_at is not None:
        argument = _argument(call, wrapper.options_at)
        method = wrapper.default if argument is None else _options_method(argument, wrapper.default)
    if method is None:
        return None
    return _located(method.upper(), _join(wrapper.base, url))


def _options_method(options: Node, default: str) -> str | None:
    """The ``method`` of an options object literal; None if it is not one or not literal."""
    if options.type != "object":
        return None
    value = _property(options, "method")
    if value is None:
        spread = any(child.type == "spread_element" for child in options.named_children)
        return None if spread else default
    literal = string_value(value)
    return literal.upper() if literal is not None else None


def _argument(call: Node, index: int) -> Node | None:
    arguments = call.child_by_field_name("arguments")
    if arguments is None:
        return None
    named = [c for c in arguments.named_children if c.type != "comment"]
    return named[index] if index < len(named) else None


def _property(obj: Node, key: str) -> Node | None:
    """The value of ``key`` in an object literal (``{key: v}`` or shorthand ``{key}``)."""
    for child in obj.named_children:
        if child.type == "pair" and _key(child.child_by_field_name("key")) == key:
            return child.child_by_field_name("value")
        if child.type == "shorthand_property_identifier" and text(child) == key:
            return child
    return None


def _key(node: Node | None) -> str:
    value = string_value(node)
    return value if value is not None else text(node)
