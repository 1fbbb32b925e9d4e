"""The model behind the phases: the Anthropic Messages API, or a cassette of recorded answers.

Providers share one small interface (``LLMProvider``): given a call, return the raw
answer text with its ``stop_reason`` and usage. Interpreting the answer (cut, broken,
complete) is the phase runner's job, so every provider behaves the same way there.
SDK errors are translated here, once, into retryable and permanent errors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anthropic

from daemon.errors import PermanentLLMError, ReplayMissing, RetryableLLMError
from daemon.models import Usage

log = logging.getLogger(__name__)
CASSETTE_FORMAT = 1


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


class LLMProvider(Protocol):
    async def complete(self, call: LLMCall) -> LLMAnswer: ...

    async def aclose(self) -> None: ...


class AnthropicProvider:
    """Claude through the official async SDK, with structured output and explicit limits."""

    def __init__(self, max_retries: int, timeout_s: float) -> None:
        # The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment.
        self._client = anthropic.AsyncAnthropic(max_retries=max_retries, timeout=timeout_s)

    async def complete(self, call: LLMCall) -> LLMAnswer:
        try:
            message = await self._client.messages.create(
                model=call.model,
                max_tokens=call.max_tokens,
                system=call.system,  # type: ignore[arg-type]
                messages=call.messages,  # type: ignore[arg-type]
                output_config={"format": {"type": "json_schema", "schema": call.schema}},
                timeout=call.timeout_s,
            )
        except anthropic.APIStatusError as exc:
            raise _translate_status(exc) from None
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            raise RetryableLLMError(f"{type(exc).__name__}: model API unreachable") from None
        text = "".join(block.text for block in message.content if block.type == "text")
        return LLMAnswer(
            text=text, stop_reason=message.stop_reason or "end_turn", usage=_usage(message.usage)
        )

    async def aclose(self) -> None:
        await self._client.close()


def _translate_status(exc: anthropic.APIStatusError) -> Exception:
    # Only the status, type and request id: the SDK's message never carries the key,
    # but the request headers do, so nothing of the request is included.
    reason = (
        f"HTTP {exc.status_code} {getattr(exc, 'type', None) or ''} (request-id {exc.request_id})"
    )
    if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
        return RetryableLLMError(reason.strip())
    return PermanentLLMError(reason.strip())


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

    async def complete(self, call: LLMCall) -> LLMAnswer:
        name = cassette_entry_name(call.phase, call.call)
        for candidate in (self._dir / call.job_id / name, self._dir / name):
            if candidate.is_file():
                return _answer_from_entry(json.loads(candidate.read_text(encoding="utf-8")))
        raise ReplayMissing(f"cassette {self._dir} has no answer {name} for job {call.job_id}")

    async def aclose(self) -> None:
        return None


def _answer_from_entry(entry: dict[str, Any]) -> LLMAnswer:
    response = entry["response"]
    usage = Usage(**{**response.get("usage", {}), "calls": 1})
    return LLMAnswer(text=response["text"], stop_reason=response["stop_reason"], usage=usage)


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

    async def complete(self, call: LLMCall) -> LLMAnswer:
        answer = await self._inner.complete(call)
        target = self._dir / call.job_id / cassette_entry_name(call.phase, call.call)
        target.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "phase": call.phase,
            "call": call.call,
            "request": {"model": call.model, "max_tokens": call.max_tokens},
            "response": {
                "stop_reason": answer.stop_reason,
                "text": answer.text,
                "usage": answer.usage.model_dump(exclude={"calls"}),
            },
        }
        target.write_text(json.dumps(entry, indent=1), encoding="utf-8")
        return answer

    async def aclose(self) -> None:
        await self._inner.aclose()
