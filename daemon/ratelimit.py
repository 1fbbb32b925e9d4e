"""One rate limiter shared by every job's model calls.

Three token buckets (requests, input tokens, output tokens per minute) from config, kept
in step with what the API reports (``anthropic-ratelimit-*-remaining`` and ``-reset``),
and one global pause: a 429 or 529 makes every caller wait, not only the job that met it.

In a cluster every daemon is configured with the account's limits and uses a share of them
(``set_share``: owned partitions / partitions of the requests topic, docs/cluster-design.md
section 6.1), so the daemons of a group together never go over the account's limits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

HEADER_PREFIX = "anthropic-ratelimit-"
KINDS = ("requests", "input-tokens", "output-tokens")


@dataclass
class Bucket:
    """``configured`` per minute, of which this daemon may use ``capacity`` (its share),
    refilled continuously. ``configured`` 0 means unlimited, whatever the share; a limited
    bucket whose share is 0 lets nothing through."""

    configured: float
    capacity: float = field(init=False)
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.capacity = self.level = self.configured

    @property
    def limited(self) -> bool:
        return self.configured > 0

    def refill(self, now: float) -> None:
        if self.capacity:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """How long until ``amount`` is available (an amount above capacity waits for a full
        bucket); ``math.inf`` while a limited bucket has no share."""
        if not self.limited:
            return 0.0
        if not self.capacity:
            return math.inf
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing * 60 / self.capacity)

    def scale(self, fraction: float, now: float) -> None:
        """Take ``fraction`` of the configured rate: what refilled until ``now`` counts at the
        old rate, and the level is lowered to the new capacity, never raised."""
        self.refill(now)
        self.capacity = self.configured * fraction
        self.level = min(self.level, self.capacity)

    def give_back(self, amount: float) -> None:
        """Return an unused reservation, never above capacity (which may have shrunk or been
        refilled since the reservation was taken)."""
        self.level += amount
        if self.limited:
            self.level = min(self.level, self.capacity)


class RateLimiter:
    """The three buckets and the pause. A limit of 0 is no limit; ``share`` starts at 1."""

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
        self._share = 1.0
        self._has_share = asyncio.Event()
        self._has_share.set()

    @property
    def share(self) -> float:
        """The fraction of the configured limits this daemon uses, from 0 to 1."""
        return self._share

    def set_share(self, fraction: float) -> None:
        """Use ``fraction`` of each configured limit from now on (the cluster's share of this
        daemon). A smaller share lowers the buckets' levels to their new capacities at once;
        a larger one only refills faster from here. Unlimited buckets stay unlimited.

        A share of 0 (the daemon owns no partition, so it has no jobs): a call that needs a
        limited bucket waits until a share comes back, however long; it does not sleep in
        steps meanwhile. With no limit configured at all, calls are not held."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"a rate share is from 0 to 1, not {fraction}")
        now = self._clock()
        for bucket in self._buckets.values():
            bucket.scale(fraction, now)
        self._share = fraction
        if fraction:
            self._has_share.set()
        else:
            self._has_share.clear()

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        """Wait until a call of this size fits every budget and no pause is on, then take it."""
        wanted = {"requests": 1, "input-tokens": input_tokens, "output-tokens": output_tokens}
        async with self._lock:  # one waiter at a time keeps the order fair
            while (delay_s := self._delay_s(wanted)) > 0:
                if math.isinf(delay_s):  # no share: only set_share can change that
                    await self._has_share.wait()
                else:
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
        now = self._clock()
        for kind, unused in (
            ("input-tokens", input_estimate - input_tokens),
            ("output-tokens", output_max - output_tokens),
        ):
            bucket = self._buckets[kind]
            bucket.refill(now)
            bucket.give_back(unused)

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
            if bucket.limited:
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
