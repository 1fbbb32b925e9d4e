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


async def test_a_smaller_share_lowers_the_level_and_the_rate():
    clock = Clock()
    limiter = RateLimiter(requests_per_min=60, clock=clock, sleep=clock.sleep)
    limiter.set_share(0.5)
    assert limiter.share == 0.5
    for _ in range(30):  # the full bucket of 60 was cut to its new capacity, 30
        await limiter.acquire(0, 0)
    assert clock.slept == []
    await limiter.acquire(0, 0)
    assert abs(sum(clock.slept) - 2.0) < 1e-6  # 30 a minute: one request every 2 s


async def test_a_larger_share_refills_faster_but_adds_nothing_at_once():
    clock = Clock()
    limiter = RateLimiter(requests_per_min=60, clock=clock, sleep=clock.sleep)
    limiter.set_share(0.5)
    for _ in range(30):
        await limiter.acquire(0, 0)
    limiter.set_share(1.0)
    await limiter.acquire(0, 0)  # still empty: waits for one request at 60 a minute
    assert abs(sum(clock.slept) - 1.0) < 1e-6
    clock.now += 60  # a minute idle fills the bucket to the whole configured capacity
    clock.slept.clear()
    for _ in range(60):
        await limiter.acquire(0, 0)
    assert clock.slept == []


async def test_reservations_given_back_after_a_share_drop_stay_within_the_new_capacity():
    clock = Clock()
    limiter = RateLimiter(output_tokens_per_min=10_000, clock=clock, sleep=clock.sleep)
    await limiter.acquire(0, 8_000)  # a call in flight holds 8,000 of the 10,000
    limiter.set_share(0.5)  # capacity 5,000; the level, 2,000, stays
    clock.now += 60  # the call streams for a minute: the bucket refills to 5,000
    limiter.settle(0, 0, 8_000, 2_000)  # 6,000 unused come back: the level stays 5,000
    await limiter.acquire(0, 5_000)
    assert clock.slept == []
    await limiter.acquire(0, 2_500)  # empty now: had 5,000 not capped it, 6,000 would be left
    assert abs(sum(clock.slept) - 30.0) < 1e-6  # half a minute at 5,000 a minute


async def test_a_share_drop_while_a_caller_waits_makes_it_wait_longer():
    clock = Clock()

    async def sleep_and_lose_share(seconds: float) -> None:
        if not clock.slept:
            limiter.set_share(0.25)  # the assignment changes while the caller sleeps
        await clock.sleep(seconds)

    limiter = RateLimiter(requests_per_min=60, clock=clock, sleep=sleep_and_lose_share)
    for _ in range(61):
        await limiter.acquire(0, 0)
    # the caller planned 1 s at 60 a minute, but that second brought 0.25 request at 15 a
    # minute; it sleeps again for the 0.75 missing (3 s) instead of taking what is not there
    assert clock.slept == [1.0, 3.0]


async def test_a_share_of_zero_holds_calls_until_a_share_comes_back():
    clock = Clock()
    limiter = RateLimiter(requests_per_min=60, clock=clock, sleep=clock.sleep)
    limiter.set_share(0)
    call = asyncio.create_task(limiter.acquire(0, 0))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not call.done() and clock.slept == []  # waiting, not sleeping in steps
    limiter.set_share(1 / 3)  # 20 a minute, from the empty bucket the share of 0 left
    await call
    assert abs(sum(clock.slept) - 3.0) < 1e-6


async def test_unlimited_buckets_stay_unlimited_whatever_the_share():
    clock = Clock()
    limiter = RateLimiter(output_tokens_per_min=10_000, clock=clock, sleep=clock.sleep)
    limiter.set_share(0.5)
    for _ in range(1_000):  # requests and input tokens have no limit configured
        await limiter.acquire(10**6, 0)
    await limiter.acquire(0, 5_000)
    assert clock.slept == []
    unlimited = RateLimiter(clock=clock, sleep=clock.sleep)
    unlimited.set_share(0)  # nothing configured: nothing to share, nothing held
    await unlimited.acquire(10**6, 10**6)
    assert clock.slept == []


def test_a_share_is_a_fraction():
    limiter = RateLimiter(requests_per_min=60)
    for wrong in (-0.1, 1.5, float("nan")):
        try:
            limiter.set_share(wrong)
        except ValueError:
            continue
        raise AssertionError(f"set_share({wrong}) was accepted")
    assert limiter.share == 1.0
