"""One rate limiter shared by every job's model calls.

Three token buckets (requests, input tokens, output tokens per minute) from config, kept
in step with what the API reports (``anthropic-ratelimit-*-remaining`` and ``-reset``),
and one global pause: a 429 or 529 makes every caller wait, not only the job that met it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

HEADER_PREFIX = "anthropic-ratelimit-"
KINDS = ("requests", "input-tokens", "output-tokens")


@dataclass
class Bucket:
    """``capacity`` per minute, refilled continuously; 0 means unlimited."""

    capacity: float
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.capacity

    def refill(self, now: float) -> None:
        if self.capacity:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """How long until ``amount`` is available (an amount above capacity waits for a full bucket)."""
        if not self.capacity:
            return 0.0
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing * 60 / self.capacity)


class RateLimiter:
    def __init__(
        self,
        requests_per_min: int = 0,
        input_tokens_per_min: int = 0,
        output_tokens_per_min: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets = {
            "requests": Bucket(requests_per_min, updated=clock()),
            "input-tokens": Bucket(input_tokens_per_min, updated=clock()),
            "output-tokens": Bucket(output_tokens_per_min, updated=clock()),
        }
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        """Wait until a call of this size fits every budget and no pause is on, then take it."""
        wanted = {"requests": 1, "input-tokens": input_tokens, "output-tokens": output_tokens}
        async with self._lock:  # one waiter at a time keeps the order fair
            while (delay_s := self._delay_s(wanted)) > 0:
                await self._sleep(delay_s)
            for kind, amount in wanted.items():
                self._buckets[kind].level -= amount

    def _delay_s(self, wanted: Mapping[str, int]) -> float:
        now = self._clock()
        for bucket in self._buckets.values():
            bucket.refill(now)
        waits = [self._buckets[kind].wait_s(amount) for kind, amount in wanted.items()]
        return max([self._paused_until - now, *waits])

    def settle(
        self, input_estimate: int, input_tokens: int, output_max: int, output_tokens: int
    ) -> None:
        """Give back what a call reserved but did not use."""
        self._buckets["input-tokens"].level += input_estimate - input_tokens
        self._buckets["output-tokens"].level += output_max - output_tokens

    def pause(self, seconds: float) -> None:
        """Every call waits ``seconds`` from now (the API said it is overloaded or limited)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Follow the API's own accounting: never believe in more than it says remains,
        and when something is exhausted, wait for its reset."""
        now = self._clock()
        for kind in KINDS:
            remaining = _number(headers.get(f"{HEADER_PREFIX}{kind}-remaining"))
            if remaining is None:
                continue
            bucket = self._buckets[kind]
            bucket.refill(now)
            if bucket.capacity:
                bucket.level = min(bucket.level, remaining)
            if remaining <= 0:
                reset_in_s = _seconds_until(headers.get(f"{HEADER_PREFIX}{kind}-reset"))
                if reset_in_s:
                    self.pause(reset_in_s)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _seconds_until(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, moment.timestamp() - time.time())


IMAGE_TOKENS = 1600  # the API scales images to about 1.15 megapixels: ~1,600 tokens


def estimate_tokens(messages: Sequence[Mapping[str, Any]], system: str = "") -> int:
    """A cheap upper-bound guess of a prompt's tokens before the API counts them: text at
    three characters a token, an image at its scaled size (not its base64 length)."""
    chars, images = len(system), 0
    for message in messages:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if block.get("type") == "image":
                images += 1
            else:
                chars += len(str(block.get("text", "")))
    return chars // 3 + images * IMAGE_TOKENS + 1
