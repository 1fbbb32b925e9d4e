import asyncio
from datetime import UTC, datetime, timedelta

from daemon.ratelimit import IMAGE_TOKENS, RateLimiter, estimate_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_requests_per_minute_are_enforced():
    clock = Clock()
    limiter = RateLimiter(requests_per_min=60, clock=clock, sleep=clock.sleep)
    for _ in range(60):
        await limiter.acquire(0, 0)
    assert clock.slept == []  # a full bucket at start
    await limiter.acquire(0, 0)
    assert abs(sum(clock.slept) - 1.0) < 1e-6  # one request a second once it is empty


async def test_token_budgets_and_settling():
    clock = Clock()
    limiter = RateLimiter(output_tokens_per_min=10_000, clock=clock, sleep=clock.sleep)
    await limiter.acquire(100, 8_000)
    limiter.settle(100, 100, 8_000, 2_000)  # used 2,000 of the 8,000 reserved
    await limiter.acquire(100, 8_000)
    assert clock.slept == []
    await limiter.acquire(100, 8_000)
    assert abs(sum(clock.slept) - 8_000 * 60 / 10_000) < 1e-6


async def test_a_pause_holds_every_caller():
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(5)
    through_at: list[float] = []

    async def call() -> None:
        await limiter.acquire(1, 1)
        through_at.append(clock.now)

    await asyncio.gather(call(), call())
    assert through_at == [1005, 1005]
    assert clock.slept == [5]  # the pause is waited once, not once per caller


async def test_headers_lower_the_budget_and_exhaustion_waits_for_reset():
    clock = Clock()
    limiter = RateLimiter(requests_per_min=100, clock=clock, sleep=clock.sleep)
    reset = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    limiter.observe(
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    )
    await limiter.acquire(0, 0)
    assert len(clock.slept) == 1 and 2 < clock.slept[0] <= 3


def test_estimates_count_images_by_size_not_base64():
    text = [{"role": "user", "content": [{"type": "text", "text": "x" * 300}]}]
    image = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "A" * 10**6},
                },
            ],
        }
    ]
    assert estimate_tokens(text) == 101
    assert estimate_tokens(image) == IMAGE_TOKENS + 1
    assert estimate_tokens([{"role": "user", "content": "abc"}], system="x" * 3) == 3
