"""A local stand-in for the Anthropic Messages API, spoken over real HTTP.

Tests never mock the SDK: they point ``anthropic.AsyncAnthropic(base_url=server.url)`` at a
:class:`MessagesServer`, which answers ``POST /v1/messages`` in the real wire format (JSON or
SSE). Answers are either scripted with :meth:`MessagesServer.enqueue` or produced by
``server.responder`` (by default :func:`auto_reply`, which fills the request's JSON schema).

The server is a thread, so it serves in-process async tests and daemons started as
subprocesses alike. Token counts are approximations: ``ceil(chars / CHARS_PER_TOKEN)``.

It also runs as a process of its own (the benchmarks keep its CPU apart from the daemon's):
``python -m tests.support.messages_server --port 0 --latency-s 0.2`` prints its URL on one
line and serves with the default responder until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import math
import re
import select
import signal
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

Json = dict[str, Any]
Headers = Mapping[str, str]
PhaseFileMap = Mapping[str, list[tuple[str, str]]]

CHARS_PER_TOKEN = 4
STREAM_CHUNK_CHARS = 40
MAX_SCHEMA_DEPTH = 8
PHASE_RE = re.compile(r"PHASE:\s*([A-Za-z][A-Za-z0-9_]*)")
SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def tokens(chars: int) -> int:
    """Approximate token count of ``chars`` characters."""
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass
class Reply:
    """One scripted answer.

    ``text=None`` on a 200 reply means "whatever the responder would say", so e.g.
    ``Reply(drop_after_chars=100)`` cuts the automatic answer. ``usage`` is merged over the
    computed usage. ``drop_after_chars`` / ``sse_error`` act on streams; on a non-streamed
    request the first cuts the JSON body after that many bytes, the second becomes an HTTP
    error (529 for ``overloaded_error``, else 500). ``hang`` sends nothing until the client
    disconnects or the server stops; ``delay_s`` (else ``server.latency_s``) waits first.
    """

    text: str | None = None
    stop_reason: str = "end_turn"
    usage: dict[str, Any] | None = None
    status: int = 200
    error_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0
    drop_after_chars: int | None = None
    sse_error: str | None = None
    hang: bool = False
    # Hostile streams (see ``files_answer`` for poisoned file contents): ``raw_sse`` is sent
    # as it is, each item one HTTP chunk, before the text (garbled lines such as
    # b"data: x\n\n"); ``chunk_chars`` sets the text per delta (an oversized answer in few
    # events); ``endless`` sends pings every ``PING_INTERVAL_S`` after the text instead of
    # ending the message, until the client hangs up or the server stops.
    raw_sse: list[bytes] = field(default_factory=list)
    chunk_chars: int | None = None
    endless: bool = False


PING_INTERVAL_S = 0.05


def files_answer(files: list[tuple[str, str]], complete: bool = True) -> str:
    """The text of a files answer holding ``files`` (path, content) as given."""
    listed = [{"path": path, "content": content} for path, content in files]
    return json.dumps({"files": listed, "complete": complete})


@dataclass
class Delivery:
    """What the server sent for one request: the answer text it meant to stream and how
    many of its characters went out before the answer ended or the client went away."""

    text: str = ""
    chars_sent: int = 0
    finished: bool = False


@dataclass(frozen=True)
class Recorded:
    """A request as received: JSON body, lower-cased headers (no credentials), its phase,
    when it arrived (``time.time()``) and what was sent back (``delivery``)."""

    body: Json
    headers: dict[str, str]
    phase: str | None
    received_at: float = 0.0
    delivery: Delivery = field(default_factory=Delivery)


def _block_text(block: Any) -> str:
    """The text a content block contributes to the prompt (images, documents, tools: none)."""
    if isinstance(block, dict) and block.get("type") == "text":
        return str(block.get("text", ""))
    return block if isinstance(block, str) else ""


def _segments(body: Json) -> list[tuple[str, Any]]:
    """``(role, block)`` pairs in prompt order: the system blocks, then each message's blocks."""
    out: list[tuple[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        out.append(("system", {"type": "text", "text": system}))
    elif isinstance(system, list):
        out.extend(("system", block) for block in system)
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content") or []
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        out.extend((str(message.get("role", "user")), block) for block in blocks)
    return out


def request_text(body: Json) -> str:
    """All prompt text of a request (system and every message), joined by newlines."""
    return "\n".join(t for t in (_block_text(b) for _, b in _segments(body)) if t)


def extract_phase(body: Json) -> str | None:
    """The last ``PHASE: <STATE>`` marker of the user messages, else of the system prompt."""
    for role in ("user", "system"):
        text = "\n".join(_block_text(b) for r, b in _segments(body) if r == role)
        if found := PHASE_RE.findall(text):
            return str(found[-1])
    return None


class _PromptCache:
    """Prompt-cache bookkeeping: every ``cache_control`` breakpoint's prefix hash seen so far."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def account(self, body: Json) -> tuple[int, int]:
        """``(cache_creation_tokens, cache_read_tokens)`` for ``body``; remembers its prefixes.

        The longest already-seen breakpoint prefix is read; the rest up to the last
        breakpoint is written, like the real API (minus its minimum cacheable length).
        """
        digest = hashlib.sha256(str(body.get("model")).encode())
        chars = 0
        breakpoints: list[tuple[str, int]] = []
        for role, block in _segments(body):
            marked = isinstance(block, dict) and bool(block.get("cache_control"))
            clean = {k: v for k, v in block.items() if k != "cache_control"} if marked else block
            digest.update(json.dumps([role, clean], sort_keys=True).encode())
            chars += len(_block_text(block))
            if marked:
                breakpoints.append((digest.hexdigest(), chars))
        if not breakpoints:
            return 0, 0
        with self._lock:
            read_chars = max((c for h, c in breakpoints if h in self._seen), default=0)
            self._seen.update(h for h, _ in breakpoints)
        read = tokens(read_chars)
        return tokens(breakpoints[-1][1]) - read, read


def _resolve(schema: Json, root: Json) -> Json:
    """Follow local ``$ref`` pointers (``#/$defs/Name``) until a concrete schema."""
    for _ in range(32):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            target = target[part] if part else target
        schema = target
    raise ValueError(f"$ref loop in schema at {schema.get('$ref')}")


def example_for_schema(
    schema: Json, root: Json | None = None, name: str = "x", depth: int = 0
) -> Any:
    """A small JSON instance valid against ``schema``: every property, arrays of 1-2 items.

    Handles ``$ref``/``$defs``, ``const``, ``enum``, ``anyOf``/``oneOf`` (first non-null
    option), ``allOf`` (merged) and the usual length/size bounds; ignores ``pattern``.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if options := schema.get(key):
            usable = [o for o in options if _resolve(o, root).get("type") != "null"] or options
            return example_for_schema(usable[0], root, name, depth)
    if parts := schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            merged.update(_resolve(part, root))
        return example_for_schema(merged, root, name, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props: Json = schema.get("properties") or {}
        if depth >= MAX_SCHEMA_DEPTH:
            props = {k: v for k, v in props.items() if k in schema.get("required", [])}
        return {k: example_for_schema(v, root, k, depth + 1) for k, v in props.items()}
    if kind == "array":
        count = max(schema.get("minItems", 0), 2 if depth <= 1 else 1)
        count = min(count, schema.get("maxItems", count))
        count = 0 if depth >= MAX_SCHEMA_DEPTH else count
        item = schema.get("items") or {}
        return [example_for_schema(item, root, f"{name}_{i + 1}", depth + 1) for i in range(count)]
    return _example_scalar(kind, schema, name)


def _example_scalar(kind: str, schema: Json, name: str) -> Any:
    """Example value of a scalar JSON-schema type."""
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        value = min(low, schema.get("maximum", low))
        return int(value) if kind == "integer" else float(value)
    formats = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01"}
    text = formats.get(schema.get("format", ""), f"{name}-x")
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[: schema.get("maxLength", len(text))]


def default_phase_files(phase: str) -> list[tuple[str, str]]:
    """Three deterministic ~300-char files for ``phase``."""
    files = []
    for n in range(1, 4):
        path = f"generated/{phase.lower()}/file_{n}.txt"
        lines = [f"# {path}"] + [f"line {i}: content of file {n} for {phase}" for i in range(1, 9)]
        files.append((path, "\n".join(lines) + "\n"))
    return files


# The phases that write files, in order (the daemon's file plan assigns each file to one).
FILE_PHASES = (
    "DB",
    "BE_CORE",
    "BE_MODELS",
    "BE_ROUTES",
    "BE_UTILS",
    "FE_SETUP",
    "FE_CORE",
    "FE_PAGES",
    "FE_COMPONENTS",
    "CONFIG",
)
_PRODUCED = re.compile(
    r"^Files of this phase already (?:produced|planned) \(.*?\):\n((?:- .*\n?)*)", re.M
)


def produced_paths(body: Json) -> set[str]:
    """The paths the request lists as already produced (or planned) by the phase."""
    text = request_text(body)
    return {line[2:].strip() for block in _PRODUCED.findall(text) for line in block.splitlines()}


def answer_kind(schema: Json | None) -> str:
    """What the output schema asks for: ``files``, ``arch`` (an architecture with the start
    of its file plan), ``plan`` (more of a file plan), or ``other``."""
    if schema is None:
        return "other"
    props = _resolve(schema, schema).get("properties") or {}
    if "summary" in props:
        return "arch"
    if "files" not in props:
        return "other"
    item = _resolve((props["files"].get("items") or {}), schema)
    return "plan" if "phase" in (item.get("properties") or {}) else "files"


def planned_files(phase_files: PhaseFileMap | None = None) -> list[Json]:
    """A file plan that agrees with the files the fake answers each phase with."""
    entries = []
    for phase in FILE_PHASES:
        files = (phase_files or {}).get(phase)
        for path, _ in default_phase_files(phase) if files is None else files:
            entries.append(
                {
                    "path": path,
                    "phase": phase,
                    "purpose": f"a file of {phase}",
                    "exports": [],
                    "imports": [],
                }
            )
    return entries


def _output_schema(body: Json) -> Json | None:
    """The JSON schema of ``output_config.format``, if the request asks for one."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    schema = fmt.get("schema")
    return schema if isinstance(schema, dict) else None


def cap_to_max_tokens(reply: Reply, max_tokens: Any) -> Reply:
    """Cut ``reply.text`` to ``max_tokens * CHARS_PER_TOKEN`` chars, ``stop_reason=max_tokens``."""
    if not isinstance(max_tokens, int) or reply.text is None:
        return reply
    limit = max_tokens * CHARS_PER_TOKEN
    if len(reply.text) <= limit:
        return reply
    usage = {**(reply.usage or {}), "output_tokens": max_tokens}
    return replace(reply, text=reply.text[:limit], stop_reason="max_tokens", usage=usage)


def auto_reply(body: Json, phase_files: PhaseFileMap | None = None) -> Reply:
    """Answer from the request's output schema: a files object, or a generic schema instance.

    Files already named anywhere in the request text are left out (the continuation
    protocol); ``phase_files[phase]`` overrides the generated files. Cut at ``max_tokens``.
    """
    phase = extract_phase(body)
    schema = _output_schema(body)
    kind = answer_kind(schema)
    if schema is None:
        text = f"Fake answer for phase {phase}."
    elif kind == "files":
        key = phase or "ANY"
        files = (phase_files or {}).get(key)
        files = default_phase_files(key) if files is None else files
        seen = produced_paths(body)
        listed = [{"path": p, "content": c} for p, c in files if p not in seen]
        text = json.dumps({"files": listed, "complete": True})
    elif kind == "arch":
        plan = example_for_schema(schema)
        plan.update(files=planned_files(phase_files), complete=True)
        text = json.dumps(plan)
    elif kind == "plan":
        seen = produced_paths(body)
        rest = [e for e in planned_files(phase_files) if e["path"] not in seen]
        text = json.dumps({"files": rest, "complete": True})
    else:
        text = json.dumps(example_for_schema(schema))
    return cap_to_max_tokens(Reply(text=text), body.get("max_tokens"))


def stalling_responder(
    rate: float, seed: int = 0, phase_files: PhaseFileMap | None = None
) -> Callable[[Json], Reply]:
    """A responder that, like real models now and then, answers ``"complete": false``
    without a new file: at ``rate`` of the calls (drawn from ``seed``) it repeats the
    phase's files the request already lists as produced, or, when it lists none, sends
    an empty file list. Otherwise it answers like :func:`auto_reply`. Deterministic per
    request: the same request gets the same answer, as a model at temperature 0 would."""

    def respond(body: Json) -> Reply:
        normal = auto_reply(body, phase_files)
        if answer_kind(_output_schema(body)) != "files":
            return normal
        digest = hashlib.sha256(f"{seed}:{json.dumps(body, sort_keys=True)}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= rate:
            return normal
        key = extract_phase(body) or "ANY"
        files = (phase_files or {}).get(key) or default_phase_files(key)
        seen = produced_paths(body)
        repeated = [{"path": p, "content": c} for p, c in files if p in seen]
        text = json.dumps({"files": repeated, "complete": False})
        return cap_to_max_tokens(Reply(text=text), body.get("max_tokens"))

    return respond


def _validate(body: Json) -> str | None:
    """The real API's 400 message for the most basic malformed requests, else None."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages: Field required"
    return None


def _peer_closed(sock: socket.socket) -> bool:
    """True once the client has closed its end (readable with nothing to read)."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: MessagesServer

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS ``getfqdn`` (slow without a resolver)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fake Anthropic handler failed for %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each SSE event is its own small write; with Nagle's algorithm on, a write waits for
    # the client's delayed ACK of the previous one (about 40 ms on Linux), a stall the API
    # does not have.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake Anthropic: " + format, *args)

    def do_GET(self) -> None:
        self._send_error(404, None, f"Not found: {self.path}")

    def do_POST(self) -> None:
        try:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            if not isinstance(body, dict):
                self._send_error(400, None, "The request body is not valid JSON.")
            elif path == "/v1/messages":
                self._messages(body)
            else:
                self._send_error(404, None, f"Not found: {self.path}")
        except (ConnectionError, OSError):  # the client (or stop()) went away mid-answer
            self.close_connection = True

    def _messages(self, body: Json) -> None:
        owner = self.server.owner
        recorded = owner._record(body, {k.lower(): v for k, v in self.headers.items()})
        if problem := _validate(body):
            return self._send_error(400, None, problem)
        try:
            reply = owner._next_reply(body, recorded.phase)
        except Exception as exc:  # a broken responder shows as a 500, not as a dropped socket
            log.exception("fake Anthropic responder failed")
            return self._send_error(500, None, f"fake responder failed: {exc!r}")
        delay = reply.delay_s or owner.latency_s
        if (delay and owner._released.wait(delay)) or reply.hang:
            return self._hang()
        if reply.status != 200:
            message = f"Scripted {reply.status} from the fake Anthropic server"
            return self._send_error(reply.status, reply.error_type, message, reply.headers)
        if body.get("stream"):
            return self._stream(body, reply, recorded.delivery)
        if reply.sse_error:
            status = 529 if reply.sse_error == "overloaded_error" else 500
            return self._send_error(status, reply.sse_error, "Scripted error", reply.headers)
        self._send_message(body, reply)

    def _hang(self) -> None:
        """Answer nothing until the server stops or the client hangs up; then close."""
        self.close_connection = True
        while not self.server.owner._released.wait(0.05):
            if _peer_closed(self.connection):
                return

    def _base_headers(self) -> dict[str, str]:
        reset = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"request-id": self.server.owner._new_id("req")}
        limits = {"requests": 10_000, "input-tokens": 10**8, "output-tokens": 10**7}
        for kind, limit in limits.items():
            prefix = f"anthropic-ratelimit-{kind}"
            headers |= {f"{prefix}-limit": str(limit), f"{prefix}-remaining": str(limit - 1)}
            headers[f"{prefix}-reset"] = reset
        return headers

    def _start(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status, "Overloaded" if status == 529 else None)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_json(
        self, status: int, payload: Json, headers: Headers | None = None, cut: int | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        base = {"content-type": "application/json", "content-length": str(len(data))}
        self._start(status, base | self._base_headers() | dict(headers or {}))
        if cut is not None:  # a Content-Length promise left unkept: the client sees a torn body
            self.close_connection = True
            data = data[: max(0, min(cut, len(data) - 1))]
        self.wfile.write(data)

    def _send_error(
        self, status: int, kind: str | None, msg: str, headers: Headers | None = None
    ) -> None:
        error = {"type": kind or DEFAULT_ERROR_TYPES.get(status, "api_error"), "message": msg}
        self._send_json(status, {"type": "error", "error": error}, headers)

    def _message(self, body: Json, reply: Reply, text: str) -> Json:
        owner = self.server.owner
        return {
            "id": owner._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": owner._usage(body, text, reply.usage),
        }

    def _send_message(self, body: Json, reply: Reply) -> None:
        message = self._message(body, reply, reply.text or "")
        self._send_json(200, message, reply.headers, cut=reply.drop_after_chars)

    def _event(self, data: Json) -> None:
        """Write one SSE event (named after its ``type``) as one HTTP chunk."""
        payload = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(f"{len(payload):X}\r\n".encode() + payload + b"\r\n")

    def _stream(self, body: Json, reply: Reply, delivery: Delivery) -> None:
        """The real event sequence, chunked; a drop closes without the terminating chunk.
        ``server.chunk_delay_s`` paces the text deltas; ``delivery`` counts what went out."""
        text = reply.text or ""
        delivery.text = text
        pause_s = self.server.owner.chunk_delay_s
        message = self._message(body, reply, text)
        usage = message["usage"]
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        headers |= {"transfer-encoding": "chunked"}
        self._start(200, headers | self._base_headers() | reply.headers)
        # A whole stream ends with the terminating chunk and the connection stays open for
        # the next request, as the real API's does; a torn one closes it.
        self.close_connection = True
        start = message | {"content": [], "stop_reason": None}
        start["usage"] = usage | {"output_tokens": 1}
        self._event({"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        self._event({"type": "content_block_start", "index": 0, "content_block": block})
        self._event({"type": "ping"})
        for raw in reply.raw_sse:
            self.wfile.write(f"{len(raw):X}\r\n".encode() + raw + b"\r\n")
        limit = len(text) // 2 if reply.sse_error else len(text)
        if reply.drop_after_chars is not None:
            limit = min(limit, reply.drop_after_chars)
        step = reply.chunk_chars or STREAM_CHUNK_CHARS
        for i in range(0, limit, step):
            if pause_s and i and self.server.owner._released.wait(pause_s):
                return
            delta = {"type": "text_delta", "text": text[i : min(i + step, limit)]}
            self._event({"type": "content_block_delta", "index": 0, "delta": delta})
            delivery.chars_sent += len(delta["text"])
        if reply.drop_after_chars is not None:
            return
        if reply.endless:
            return self._ping_forever()
        if reply.sse_error:
            error = {"type": reply.sse_error, "message": "Scripted stream error"}
            self._event({"type": "error", "error": error})
        else:
            self._event({"type": "content_block_stop", "index": 0})
            delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
            final = {"output_tokens": usage["output_tokens"]}
            self._event({"type": "message_delta", "delta": delta, "usage": final})
            self._event({"type": "message_stop"})
            delivery.finished = True
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = False

    def _ping_forever(self) -> None:
        """A stream that never ends: a ping every PING_INTERVAL_S (the client's read
        timeout never fires) until the client hangs up or the server stops."""
        while not self.server.owner._released.wait(PING_INTERVAL_S):
            self._event({"type": "ping"})  # OSError once the client is gone


class MessagesServer:
    """A fake ``/v1/messages`` on ``127.0.0.1`` (a free port), served from a daemon thread.

    ``responder`` answers when no scripted :class:`Reply` is queued; ``latency_s`` delays
    every answer without its own ``delay_s``; ``chunk_delay_s`` paces a stream's text
    deltas (so a stream lasts a while); ``phase_files`` feeds :func:`auto_reply`; ``port``
    0 picks a free one.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        phase_files: PhaseFileMap | None = None,
        responder: Callable[[Json], Reply] | None = None,
        chunk_delay_s: float = 0.0,
        port: int = 0,
    ) -> None:
        self.port = port
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self.phase_files: dict[str, list[tuple[str, str]]] = dict(phase_files or {})
        self.responder: Callable[[Json], Reply] = responder or self.default_responder
        self._cond = threading.Condition()
        self._requests: list[Recorded] = []
        self._queues: dict[str | None, deque[Reply]] = {}
        self._cache = _PromptCache()
        self._ids = itertools.count(1)
        self._released = threading.Event()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> MessagesServer:
        """Bind a free port and serve in a daemon thread (no-op when already running)."""
        if self._httpd is None:
            self._released.clear()
            self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
            self._httpd.owner = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-anthropic-{self._httpd.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: releases hung and delayed replies and closes open connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._released.set()
        httpd.shutdown()
        with self._cond:
            conns = dict(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        for thread in (self._thread, *conns.values()):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2)

    def __enter__(self) -> MessagesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for the SDK, e.g. ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("MessagesServer is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- scripting and inspection

    def enqueue(self, phase: str | None, *replies: Reply) -> None:
        """Queue replies for requests of ``phase`` (None: any phase, used after the phase's own)."""
        with self._cond:
            self._queues.setdefault(phase, deque()).extend(replies)

    def default_responder(self, body: Json) -> Reply:
        """The built-in responder: :func:`auto_reply` with this server's ``phase_files``."""
        return auto_reply(body, self.phase_files)

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every ``/v1/messages`` request so far, oldest first."""
        with self._cond:
            return list(self._requests)

    def calls_for(self, phase: str | None) -> list[Recorded]:
        """The recorded requests whose phase is ``phase``."""
        return [r for r in self.requests if r.phase == phase]

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> list[Recorded]:
        """Block until at least ``count`` requests arrived (TimeoutError otherwise)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout_s):
                raise TimeoutError(f"{len(self._requests)} of {count} requests after {timeout_s}s")
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests, queued replies and the prompt cache."""
        with self._cond:
            self._requests.clear()
            self._queues.clear()
            self._cache = _PromptCache()

    # -- used by the handler threads

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns[sock] = threading.current_thread()
            else:
                self._conns.pop(sock, None)

    def _record(self, body: Json, headers: dict[str, str]) -> Recorded:
        safe = {k: v for k, v in headers.items() if k not in SECRET_HEADERS}
        recorded = Recorded(
            body=body, headers=safe, phase=extract_phase(body), received_at=time.time()
        )
        with self._cond:
            self._requests.append(recorded)
            self._cond.notify_all()
        return recorded

    def _next_reply(self, body: Json, phase: str | None) -> Reply:
        with self._cond:
            queue = next((q for q in (self._queues.get(phase), self._queues.get(None)) if q), None)
            scripted = queue.popleft() if queue else None
        if scripted is not None and (scripted.text is not None or scripted.status != 200):
            return scripted
        auto = self.responder(body)
        if scripted is None:
            return auto
        stop = auto.stop_reason if scripted.stop_reason == "end_turn" else scripted.stop_reason
        usage = scripted.usage or auto.usage
        return replace(scripted, text=auto.text, stop_reason=stop, usage=usage)

    def _usage(self, body: Json, text: str, override: Mapping[str, Any] | None) -> Json:
        creation, read = self._cache.account(body)
        usage: Json = {
            "input_tokens": max(0, tokens(len(request_text(body))) - creation - read),
            "output_tokens": tokens(len(text)),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": creation,
                "ephemeral_1h_input_tokens": 0,
            },
            "service_tier": "standard",
        }
        return usage | dict(override or {})

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):020d}"


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; the URL is the first line printed."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.messages_server",
        description="A local Messages API server answering with the default responder.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before each answer")
    parser.add_argument(
        "--chunk-delay-s", type=float, default=0.0, help="pause between a stream's text deltas"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = MessagesServer(
        latency_s=args.latency_s, chunk_delay_s=args.chunk_delay_s, port=args.port
    )
    with server:
        print(server.url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
