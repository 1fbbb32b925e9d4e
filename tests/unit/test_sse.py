import json

import pytest

from daemon.errors import PermanentLLMError, RetryableLLMError
from daemon.llm import SseAnswer


def feed(answer: SseAnswer, *events: dict) -> None:
    for event in events:
        answer.feed(f"event: {event['type']}")
        answer.feed("data: " + json.dumps(event))
        answer.feed("")


START = {
    "type": "message_start",
    "message": {
        "usage": {
            "input_tokens": 12,
            "cache_read_input_tokens": None,
            "cache_creation_input_tokens": 7,
        }
    },
}


def delta(text: str) -> dict:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


def test_text_usage_and_stop_reason():
    seen: list[str] = []
    answer = SseAnswer(seen.append)
    feed(
        answer,
        START,
        {"type": "ping"},
        delta('{"fi'),
        delta('les": []}'),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    )
    result = answer.result({"anthropic-ratelimit-requests-remaining": "9"})
    assert seen == ['{"fi', 'les": []}'] and result.text == '{"files": []}'
    assert result.stop_reason == "max_tokens"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 5)
    assert (
        result.usage.cache_creation_input_tokens == 7 and result.usage.cache_read_input_tokens == 0
    )
    assert result.rate_limits == {"anthropic-ratelimit-requests-remaining": "9"}


def test_a_stream_without_message_stop_is_broken():
    answer = SseAnswer(lambda text: None)
    feed(answer, START, delta("{"))
    with pytest.raises(RetryableLLMError, match="before message_stop"):
        answer.result({})


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("overloaded_error", RetryableLLMError),
        ("api_error", RetryableLLMError),
        ("invalid_request_error", PermanentLLMError),
    ],
)
def test_error_events(kind, error):
    answer = SseAnswer(lambda text: None)
    with pytest.raises(error, match=kind):
        feed(answer, START, {"type": "error", "error": {"type": kind, "message": "x"}})
