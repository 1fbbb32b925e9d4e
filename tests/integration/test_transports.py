"""The provider over both of the SDK's HTTP transports: the same answers, the same errors."""

from __future__ import annotations

import pytest

from daemon.errors import PermanentLLMError, RetryableLLMError
from daemon.llm import AnthropicProvider, LLMCall
from tests.support.messages_server import Reply

pytestmark = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])

SCHEMA = {
    "type": "object",
    "properties": {"note": {"type": "string"}},
    "required": ["note"],
    "additionalProperties": False,
}


def make_call(timeout_s: float = 10.0) -> LLMCall:
    return LLMCall(
        job_id="job-1",
        phase="DB",
        call=1,
        model="claude-sonnet-5-5",  # the default; a model the SDK deprecates would warn
        max_tokens=1024,
        system=[{"type": "text", "text": "You write code."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "PHASE: DB\nGo."}]}],
        schema=SCHEMA,
        timeout_s=timeout_s,
    )


async def complete(transport: str, call: LLMCall | None = None) -> tuple[str, object]:
    provider = AnthropicProvider(timeout_s=10, http_client=transport)
    pieces: list[str] = []
    try:
        answer = await provider.complete(call or make_call(), pieces.append)
        return "".join(pieces), answer
    finally:
        await provider.aclose()


async def test_a_streamed_answer(transport, messages_server):
    text = '{"note": "' + "ü" * 300 + '"}'
    messages_server.enqueue(
        "DB", Reply(text=text, headers={"anthropic-ratelimit-requests-remaining": "41"})
    )
    streamed, answer = await complete(transport)
    assert answer.text == streamed == text and answer.stop_reason == "end_turn"
    assert answer.usage.output_tokens > 0 and answer.usage.input_tokens > 0
    assert answer.rate_limits["anthropic-ratelimit-requests-remaining"] == "41"
    assert all(name.startswith("anthropic-ratelimit-") for name in answer.rate_limits)
    [request] = messages_server.calls_for("DB")
    assert request.body["stream"] is True and request.body["max_tokens"] == 1024
    assert request.body["output_config"]["format"]["schema"] == SCHEMA


async def test_a_cut_answer_reports_max_tokens(transport, messages_server):
    messages_server.enqueue("DB", Reply(text='{"note": "abc', stop_reason="max_tokens"))
    _, answer = await complete(transport)
    assert (answer.text, answer.stop_reason) == ('{"note": "abc', "max_tokens")


async def test_a_dropped_stream_is_retryable(transport, messages_server):
    messages_server.enqueue(
        "DB", Reply(text='{"note": "' + "x" * 2000 + '"}', drop_after_chars=900)
    )
    with pytest.raises(RetryableLLMError) as caught:
        await complete(transport)
    assert caught.value.kind == "stream"


async def test_an_overload_carries_its_retry_after(transport, messages_server):
    messages_server.enqueue("DB", Reply(status=529, headers={"retry-after": "7"}))
    with pytest.raises(RetryableLLMError) as caught:
        await complete(transport)
    assert (caught.value.kind, caught.value.retry_after_s) == ("overloaded", 7.0)


async def test_a_bad_request_is_permanent(transport, messages_server):
    messages_server.enqueue("DB", Reply(status=400))
    with pytest.raises(PermanentLLMError, match="400 invalid_request_error"):
        await complete(transport)


async def test_a_hung_call_times_out(transport, messages_server):
    messages_server.enqueue("DB", Reply(hang=True))
    with pytest.raises(RetryableLLMError, match="timeout") as caught:
        await complete(transport, make_call(timeout_s=0.5))
    assert caught.value.kind == "network"
