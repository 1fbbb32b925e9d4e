"""The model behind the phases: the Anthropic Messages API, or a cassette of recorded answers.

Providers share one small interface (``LLMProvider``): given a call, return the raw
answer text with its ``stop_reason`` and usage. Interpreting the answer (cut, broken,
complete) is the phase runner's job, so every provider behaves the same way there.
SDK errors are translated here, once, into retryable and permanent errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anthropic
import httpx2
from anthropic.types import OutputConfigParam

from daemon.contract import Usage
from daemon.errors import ModelAccessDenied, PermanentLLMError, ReplayMissing, RetryableLLMError
from daemon.paths import folder_name

log = logging.getLogger(__name__)
CASSETTE_FORMAT = 1
REPLAY_CHUNK_CHARS = 256
DEFAULT_CALL_DEADLINE_S = 600.0  # llm.call_deadline_s
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024  # llm.max_answer_bytes
MAX_USAGE_TOKENS = 10**9  # a usage count above this is not believed (nor stored)


@dataclass(frozen=True)
class LLMCall:
    """One request to the model, as the phase runner builds it."""

    job_id: str
    phase: str
    call: int
    model: str
    max_tokens: int
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    schema: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True)
class LLMAnswer:
    text: str
    stop_reason: str
    usage: Usage = field(default_factory=lambda: Usage(calls=1))
    rate_limits: dict[str, str] = field(default_factory=dict)


TextSink = Callable[[str], None]
"""Receives the answer's text piece by piece as it streams in."""


class LLMProvider(Protocol):
    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer: ...

    async def aclose(self) -> None: ...


class AnthropicProvider:
    """Claude through the official async SDK, streamed, with structured output and explicit
    limits. The SDK builds, authenticates and sends the request (``stream=True``); the
    server-sent events are read here from the raw body, as the Messages API documents them,
    without a typed model object per event: text deltas go straight to ``on_text``. Streams
    are not retried by the SDK; a broken one is a RetryableLLMError, and the phase runner
    asks again for what the broken answer did not deliver.

    ``http_client="aiohttp"`` is the SDK's aiohttp transport (``anthropic[aiohttp]``),
    whose C HTTP parser costs about half the CPU per call of the default httpx transport;
    ``"httpx"`` is the SDK's default."""

    def __init__(
        self,
        timeout_s: float,
        http_client: str = "aiohttp",
        call_deadline_s: float = DEFAULT_CALL_DEADLINE_S,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        # The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment. Its
        # own retries are off: it would sleep whatever retry-after says, uncapped, and it
        # cannot retry a stream; the phase runner retries with a cap and a shared limiter.
        transport = anthropic.DefaultAioHttpClient() if http_client == "aiohttp" else None
        self._client = anthropic.AsyncAnthropic(
            max_retries=0, timeout=timeout_s, http_client=transport
        )
        self._deadline_s = call_deadline_s
        self._max_answer_bytes = max_answer_bytes

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        """One streamed call. ``call.timeout_s`` bounds each read, so a server that keeps
        sending (pings, an endless answer) is stopped by the call's deadline
        (``llm.call_deadline_s``) and the size cap (``llm.max_answer_bytes``): both end the
        call as a broken stream, and the files that closed before are already kept."""
        deadline = asyncio.timeout(self._deadline_s)
        try:
            async with deadline:
                return await self._stream(call, on_text)
        except TimeoutError:
            if deadline.expired():
                raise RetryableLLMError(
                    f"no whole answer within llm.call_deadline_s = {self._deadline_s:g} s",
                    kind="stream",
                ) from None
            raise RetryableLLMError(  # a transport's own read timeout
                f"no answer within {call.timeout_s:g} s (timeout)", kind="network"
            ) from None

    async def _stream(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        output: OutputConfigParam = {"format": {"type": "json_schema", "schema": call.schema}}
        try:
            async with self._client.messages.with_streaming_response.create(
                model=call.model,
                max_tokens=call.max_tokens,
                # daemon.prompts builds the blocks as plain dicts, not the SDK's TypedDicts
                system=call.system,  # type: ignore[arg-type]
                messages=call.messages,  # type: ignore[arg-type]
                output_config=output,
                stream=True,
                timeout=call.timeout_s,
            ) as response:
                answer = SseAnswer(on_text, self._max_answer_bytes)
                async for chunk in response.iter_bytes():
                    answer.feed(chunk)
                return answer.result(_rate_limit_headers(response.headers))
        except anthropic.APIStatusError as exc:
            raise _translate_status(exc) from None
        except anthropic.APITimeoutError:
            raise RetryableLLMError(
                f"no answer within {call.timeout_s:g} s (timeout)", kind="network"
            ) from None
        except TypeError as exc:
            if "authentication" not in str(exc):
                raise
            # The SDK found no key (nor token) when it built the request.
            raise ModelAccessDenied(
                "no API key: set ANTHROPIC_API_KEY (the SDK found no credentials)"
            ) from None
        except (anthropic.APIConnectionError, httpx2.HTTPError) as exc:
            raise RetryableLLMError(
                f"{type(exc).__name__}: the answer did not arrive whole", kind="stream"
            ) from None

    async def aclose(self) -> None:
        await self._client.close()


class SseAnswer:
    """Accumulates one streamed answer from the raw bytes of its body.

    Lines end with ``\n`` (or ``\r\n``); an event is its ``data:`` lines up to a blank
    line; other fields (``event:``, comments) are skipped, as are events other than
    message_start, text deltas, message_delta, message_stop and error. An event still
    open when the body ends is dropped, as the SSE format says. The text deltas of one
    piece of the body reach ``on_text`` together: one call per piece, however many
    events it holds (a busy daemon reads bigger pieces, and pays per piece, not per
    event).

    Whatever the body holds, ``feed`` either takes it or raises a RetryableLLMError of
    kind "stream": an event that is not a JSON object, a delta whose text is not a string,
    a body past ``max_bytes``. Work is linear in the body's length (a line that arrives in
    many pieces is joined once)."""

    def __init__(self, on_text: TextSink, max_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> None:
        self._on_text = on_text
        self._text: list[str] = []
        self._usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._stopped = False
        self._tail: list[bytes] = []  # the pieces of a line not yet ended
        self._data: list[bytes] = []
        self._fresh: list[str] = []  # text of the piece being read, not yet passed on
        self._bytes = 0
        self._max_bytes = max_bytes

    def feed(self, chunk: bytes) -> None:
        self._bytes += len(chunk)
        if self._bytes > self._max_bytes:
            raise RetryableLLMError(
                f"the answer passed llm.max_answer_bytes = {self._max_bytes} bytes", kind="stream"
            )
        if b"\n" not in chunk:
            if chunk:
                self._tail.append(chunk)
            return
        if self._tail:
            self._tail.append(chunk)
            chunk, self._tail = b"".join(self._tail), []
        lines = chunk.split(b"\n")
        if last := lines.pop():
            self._tail.append(last)
        try:
            for line in lines:
                self._line(line)
        finally:  # an error event still passes on the text before it
            if self._fresh:
                text = self._fresh[0] if len(self._fresh) == 1 else "".join(self._fresh)
                self._fresh = []
                self._on_text(text)

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                self._event(_event_object(data))
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                raise _garbled("a content_block_delta without a delta object")
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if not isinstance(text, str):
                    raise _garbled("a text_delta whose text is not a string")
                self._text.append(text)
                self._fresh.append(text)
        elif kind == "message_start":
            message = event.get("message")
            self._take_usage(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "message_delta":
            delta = event.get("delta")
            stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(stop_reason, str) and stop_reason:
                self._stop_reason = stop_reason
            self._take_usage(event.get("usage"))
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            error = event.get("error")
            raise _stream_error(error if isinstance(error, dict) else {})

    def _take_usage(self, usage: object) -> None:
        for key, value in usage.items() if isinstance(usage, dict) else ():
            if type(value) is int and 0 <= value <= MAX_USAGE_TOKENS:
                self._usage[key] = value

    def result(self, rate_limits: dict[str, str]) -> LLMAnswer:
        if not self._stopped:
            raise RetryableLLMError("the stream ended before message_stop", kind="stream")
        usage = Usage(
            input_tokens=self._usage.get("input_tokens", 0),
            output_tokens=self._usage.get("output_tokens", 0),
            cache_read_input_tokens=self._usage.get("cache_read_input_tokens", 0),
            cache_creation_input_tokens=self._usage.get("cache_creation_input_tokens", 0),
            calls=1,
        )
        return LLMAnswer(
            text="".join(self._text),
            stop_reason=self._stop_reason or "end_turn",
            usage=usage,
            rate_limits=rate_limits,
        )


def _event_object(data: bytes) -> dict[str, Any]:
    """One event's data as a JSON object, else the stream is garbled."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _garbled("an event that is not JSON") from None
    if not isinstance(event, dict):
        raise _garbled("an event that is not a JSON object")
    return event


def _garbled(what: str) -> RetryableLLMError:
    return RetryableLLMError(f"garbled stream: {what}", kind="stream")


_STREAM_ERROR_KINDS = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limit",
    "api_error": "server",
    "timeout_error": "server",
}


def _stream_error(error: dict[str, Any]) -> Exception:
    """An ``error`` event in the middle of a stream."""
    kind = str(error.get("type") or "error")
    if kind in _STREAM_ERROR_KINDS:
        return RetryableLLMError(f"stream error event {kind}", kind=_STREAM_ERROR_KINDS[kind])
    return PermanentLLMError(f"stream error event {kind}")


# Errors about the account, not the call: every job's calls would fail alike.
_ACCOUNT_ERRORS = frozenset({"authentication_error", "permission_error", "billing_error"})


def _translate_status(exc: anthropic.APIStatusError) -> Exception:
    # Only the status, type and request id: the SDK's message never carries the key,
    # but the request headers do, so nothing of the request is included.
    kind = _error_type(exc)
    reason = f"HTTP {exc.status_code} {kind} (request-id {exc.request_id})"
    if exc.status_code in (401, 402, 403) or kind in _ACCOUNT_ERRORS:
        return ModelAccessDenied(reason)
    if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
        headers = exc.response.headers
        return RetryableLLMError(
            reason,
            kind={429: "rate_limit", 529: "overloaded"}.get(exc.status_code, "server"),
            retry_after_s=_retry_after_s(headers),
            headers=_rate_limit_headers(headers),
        )
    return PermanentLLMError(reason)


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def _rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k.lower(): v for k, v in headers.items() if k.lower().startswith("anthropic-ratelimit-")
    }


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error")
    error = inner if isinstance(inner, dict) else body
    return str(error.get("type") or getattr(exc, "type", None) or "error")


def cassette_entry_name(phase: str, call: int) -> str:
    return f"{phase}.{call:02d}.json"


class ReplayProvider:
    """Answers from a cassette: ``<dir>/<job>/PHASE.NN.json``, else ``<dir>/PHASE.NN.json``
    (``<job>``: the job id as a folder name, :func:`daemon.paths.folder_name`)."""

    def __init__(self, cassette_dir: Path) -> None:
        if not cassette_dir.is_dir():
            raise PermanentLLMError(f"cassette directory {cassette_dir} does not exist")
        self._dir = cassette_dir

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        name = cassette_entry_name(call.phase, call.call)
        for candidate in (self._dir / folder_name(call.job_id) / name, self._dir / name):
            if candidate.is_file():
                return _replay(json.loads(candidate.read_text(encoding="utf-8")), on_text)
        raise ReplayMissing(f"cassette {self._dir} has no answer {name} for job {call.job_id}")

    async def aclose(self) -> None:
        return None


def _replay(entry: dict[str, Any], on_text: TextSink) -> LLMAnswer:
    """Stream a recorded answer again; a recorded failure fails again after its text."""
    response = entry["response"]
    text = response.get("text", "")
    for start in range(0, len(text), REPLAY_CHUNK_CHARS):
        on_text(text[start : start + REPLAY_CHUNK_CHARS])
    if "error" in response:
        raise RetryableLLMError(
            f"recorded failure: {response['error']}",
            kind=response.get("kind", "stream"),
            retry_after_s=response.get("retry_after_s"),
        )
    usage = Usage(**{**response.get("usage", {}), "calls": 1})
    return LLMAnswer(text=text, stop_reason=response["stop_reason"], usage=usage)


class RecordingProvider:
    """Passes calls through and writes every answer into a cassette, per job."""

    def __init__(self, inner: LLMProvider, cassette_dir: Path) -> None:
        self._inner = inner
        self._dir = cassette_dir
        cassette_dir.mkdir(parents=True, exist_ok=True)
        meta = cassette_dir / "cassette.json"
        if not meta.exists():
            meta.write_text(
                json.dumps({"format": CASSETTE_FORMAT, "label": "recorded answers"}, indent=2)
            )

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        seen: list[str] = []

        def tee(chunk: str) -> None:
            seen.append(chunk)
            on_text(chunk)

        try:
            answer = await self._inner.complete(call, tee)
        except RetryableLLMError as exc:
            # Recorded too: a replay must see the same broken stream and the same retry.
            failure = {"error": str(exc), "kind": exc.kind, "retry_after_s": exc.retry_after_s}
            self._write(call, {**failure, "text": "".join(seen)})
            raise
        self._write(
            call,
            {
                "stop_reason": answer.stop_reason,
                "text": answer.text,
                "usage": answer.usage.model_dump(exclude={"calls"}),
            },
        )
        return answer

    def _write(self, call: LLMCall, response: dict[str, Any]) -> None:
        # The job's folder is named as in output.dir: request ids "." and ".." are valid.
        target = self._dir / folder_name(call.job_id) / cassette_entry_name(call.phase, call.call)
        target.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "phase": call.phase,
            "call": call.call,
            "request": {"model": call.model, "max_tokens": call.max_tokens},
            "response": response,
        }
        target.write_text(json.dumps(entry, indent=1), encoding="utf-8")

    async def aclose(self) -> None:
        await self._inner.aclose()
