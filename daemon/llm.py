"""The model behind the phases: the Anthropic Messages API, or a cassette of recorded answers.

Providers share one small interface (``LLMProvider``): given a call, return the raw
answer text with its ``stop_reason`` and usage. Interpreting the answer (cut, broken,
complete) is the phase runner's job, so every provider behaves the same way there.
SDK errors are translated here, once, into retryable and permanent errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anthropic
import httpx2

from daemon.errors import PermanentLLMError, ReplayMissing, RetryableLLMError
from daemon.models import Usage

log = logging.getLogger(__name__)
CASSETTE_FORMAT = 1
REPLAY_CHUNK_CHARS = 256


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
    """Claude through the official async SDK: streamed, with structured output and explicit
    limits. Streams are not retried by the SDK; a broken one is a RetryableLLMError here,
    and the phase runner asks again for what the broken answer did not deliver."""

    def __init__(self, timeout_s: float) -> None:
        # The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment. Its
        # own retries are off: it would sleep whatever retry-after says, uncapped, and it
        # cannot retry a stream; the phase runner retries with a cap and a shared limiter.
        self._client = anthropic.AsyncAnthropic(max_retries=0, timeout=timeout_s)

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        try:
            async with self._client.messages.stream(
                model=call.model,
                max_tokens=call.max_tokens,
                system=call.system,  # type: ignore[arg-type]
                messages=call.messages,  # type: ignore[arg-type]
                output_config={"format": {"type": "json_schema", "schema": call.schema}},
                timeout=call.timeout_s,
            ) as stream:
                limits = _rate_limit_headers(stream.response.headers)
                async for text in stream.text_stream:
                    on_text(text)
                message = await stream.get_final_message()
        except anthropic.APIStatusError as exc:
            raise _translate_status(exc) from None
        except anthropic.APITimeoutError:
            raise RetryableLLMError(
                f"no answer within {call.timeout_s:g} s (timeout)", kind="network"
            ) from None
        except (anthropic.APIConnectionError, httpx2.HTTPError) as exc:
            raise RetryableLLMError(
                f"{type(exc).__name__}: the answer did not arrive whole", kind="stream"
            ) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        return LLMAnswer(
            text=text,
            stop_reason=message.stop_reason or "end_turn",
            usage=_usage(message.usage),
            rate_limits=limits,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _translate_status(exc: anthropic.APIStatusError) -> Exception:
    # Only the status, type and request id: the SDK's message never carries the key,
    # but the request headers do, so nothing of the request is included.
    kind = _error_type(exc)
    if exc.status_code == 200:  # an SSE error event in the middle of a stream
        return RetryableLLMError(
            f"stream error event {kind} (request-id {exc.request_id})",
            kind="overloaded" if kind == "overloaded_error" else "stream",
        )
    reason = f"HTTP {exc.status_code} {kind} (request-id {exc.request_id})"
    if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
        headers = exc.response.headers
        return RetryableLLMError(
            reason,
            kind={429: "rate_limit", 529: "overloaded"}.get(exc.status_code, "server"),
            retry_after_s=_retry_after_s(headers),
            headers=_rate_limit_headers(headers),
        )
    return PermanentLLMError(reason)


def _retry_after_s(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name)) * scale)
        except (TypeError, ValueError):
            continue
    return None


def _rate_limit_headers(headers: Any) -> dict[str, str]:
    return {
        k.lower(): v for k, v in headers.items() if k.lower().startswith("anthropic-ratelimit-")
    }


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(error.get("type") or getattr(exc, "type", None) or "error")


def _usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_input_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        cache_creation_input_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
        calls=1,
    )


def cassette_entry_name(phase: str, call: int) -> str:
    return f"{phase}.{call:02d}.json"


class ReplayProvider:
    """Answers from a cassette: ``<dir>/<job_id>/PHASE.NN.json``, else ``<dir>/PHASE.NN.json``."""

    def __init__(self, cassette_dir: Path) -> None:
        if not cassette_dir.is_dir():
            raise PermanentLLMError(f"cassette directory {cassette_dir} does not exist")
        self._dir = cassette_dir

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        name = cassette_entry_name(call.phase, call.call)
        for candidate in (self._dir / call.job_id / name, self._dir / name):
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
        target = self._dir / call.job_id / cassette_entry_name(call.phase, call.call)
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
