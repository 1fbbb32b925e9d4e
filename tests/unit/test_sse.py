import json

import pytest

from daemon.errors import PermanentLLMError, RetryableLLMError
from daemon.llm import SseAnswer


def body(*events: dict, newline: str = "\n") -> bytes:
    """The body of a stream as the Messages API sends it: event, data, blank line."""
    return "".join(
        f"event: {event['type']}{newline}data: {json.dumps(event)}{newline}{newline}"
        for event in events
    ).encode()


def feed(answer: SseAnswer, *events: dict) -> None:
    answer.feed(body(*events))


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
    assert seen == ['{"files": []}'] and result.text == '{"files": []}'
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


def complete_stream() -> list[dict]:
    return [
        START,
        {"type": "ping"},
        delta('{"files": ["ü'),
        delta('\\n"]}'),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
        {"type": "message_stop"},
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_chunks_split_anywhere_give_the_same_answer(size, newline):
    """The transport delivers the body in pieces of any size, even inside a UTF-8 character."""
    raw = b": a comment line\n" + body(*complete_stream(), newline=newline)
    seen: list[str] = []
    answer = SseAnswer(seen.append)
    pieces = [raw[start : start + size] for start in range(0, len(raw), size)]
    for piece in pieces:
        answer.feed(piece)
    result = answer.result({})
    assert result.text == "".join(seen) == '{"files": ["ü\\n"]}'
    assert len(seen) <= min(2, len(pieces))  # at most one call per piece with text in it
    assert result.stop_reason == "end_turn" and result.usage.input_tokens == 12


def test_text_before_an_error_event_is_passed_on_first():
    seen: list[str] = []
    answer = SseAnswer(seen.append)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
    with pytest.raises(RetryableLLMError, match="overloaded_error"):
        answer.feed(body(START, delta('{"files": [{"path": "a"'), error))
    assert seen == ['{"files": [{"path": "a"']


def test_an_event_of_several_data_lines_is_joined():
    answer = SseAnswer(lambda text: None)
    answer.feed(b'data: {"type":\ndata: "message_stop"}\n\n')
    assert answer.result({}).text == ""


def test_an_event_cut_by_the_end_of_the_body_is_dropped():
    answer = SseAnswer(lambda text: None)
    raw = body(START, delta("{")) + b'event: message_stop\ndata: {"type": "message_stop"}'
    answer.feed(raw)
    with pytest.raises(RetryableLLMError, match="before message_stop"):
        answer.result({})
