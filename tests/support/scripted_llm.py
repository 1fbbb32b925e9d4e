"""A model provider of our own interface that answers from a script (no network): each
call takes the next answer, or raises the next exception, and streams the text in chunks."""

from __future__ import annotations

import json
from typing import Any

from daemon.contract import Usage
from daemon.llm import LLMAnswer, LLMCall, TextSink


def answer(obj: Any, stop_reason: str = "end_turn", cut_at: int | None = None) -> LLMAnswer:
    """An answer whose text is ``obj`` as JSON, cut after ``cut_at`` characters if given."""
    text = json.dumps(obj)
    if cut_at is not None:
        text = text[:cut_at]
    return LLMAnswer(
        text=text, stop_reason=stop_reason, usage=Usage(input_tokens=10, output_tokens=5, calls=1)
    )


class Scripted:
    """Answers ``answers`` in order; ``calls`` holds every call made."""

    def __init__(self, *answers: LLMAnswer | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[LLMCall] = []

    async def complete(self, call: LLMCall, on_text: TextSink) -> LLMAnswer:
        self.calls.append(call)
        item = self.answers.pop(0)
        if isinstance(item, Exception):
            raise item
        for start in range(0, len(item.text), 10):
            on_text(item.text[start : start + 10])
        return item

    async def aclose(self) -> None:
        pass
