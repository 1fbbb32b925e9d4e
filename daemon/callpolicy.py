"""What every model call goes through, around the request itself.

Before a call: an API that refused the account is not called again for
``MODEL_ACCESS_RETRY_S``; the call waits its turn at the shared rate limiter, then for one
of the ``llm.max_concurrent_requests`` slots. While it streams, the phase's progress says
how far it got. After it: the call is recorded and counted in the metrics, and what it
used is priced and settled with the rate limiter. A passing failure waits before the
phase tries again (as long as the API asked, up to a cap, else exponentially), at most
``llm.max_retries`` times; a permanent one fails the phase.

The job's token budget (``llm.max_tokens_per_job``) is enforced here too: a phase does not
start once the job has spent it, and stops after the call that goes over it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from daemon import chaos, prompts
from daemon.contract import Usage
from daemon.errors import (
    JobBudgetExceeded,
    ModelAccessDenied,
    PermanentLLMError,
    PhaseFailed,
    RetryableLLMError,
    RetryLater,
)
from daemon.llm import LLMAnswer, LLMCall, LLMProvider, TextSink
from daemon.metrics import Metrics
from daemon.progress import ANSWERED, STREAMING, WAITING, Point
from daemon.ratelimit import RateLimiter, estimate_tokens
from daemon.records import CallRecord
from daemon.settings import LLMSettings

if TYPE_CHECKING:
    from daemon.generation import PhaseRun

log = logging.getLogger(__name__)
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0
MODEL_ACCESS_RETRY_S = 300.0


def budget_refusal(
    max_tokens_per_job: int, tokens_left: Callable[[], int]
) -> JobBudgetExceeded | None:
    """Why the job may not start another phase, if it may not: none of the tokens
    ``llm.max_tokens_per_job`` allows it are left (0: no limit)."""
    if max_tokens_per_job and tokens_left() <= 0:
        return JobBudgetExceeded(
            f"job used its llm.max_tokens_per_job = {max_tokens_per_job} tokens"
        )
    return None


@dataclass
class _Attempt:
    """One call under way: its estimate at the rate limiter, when it began, how much of
    its answer streamed in."""

    call: LLMCall
    estimate: int
    progress: Callable[[Point], None]
    on_text: TextSink
    started: float = field(default_factory=time.time)
    clock: float = field(default_factory=time.monotonic)
    chars: int = 0

    def feed(self, chunk: str) -> None:
        self.chars += len(chunk)
        self.progress(Point(self.call.call, STREAMING, self.chars))
        self.on_text(chunk)
        chaos.point("mid_stream", self.call.job_id)

    def record(self, stop_reason: str | None, error: str | None, usage: Usage) -> CallRecord:
        call = self.call
        return CallRecord(
            job_id=call.job_id,
            phase=call.phase,
            call=call.call,
            model=call.model,
            max_tokens=call.max_tokens,
            stop_reason=stop_reason,
            error=error,
            usage=usage,
            started_at=self.started,
            duration_s=time.monotonic() - self.clock,
        )


@dataclass(eq=False)
class CallPolicy:
    """Wraps each model call of every phase; one per daemon, so that the rate limiter, the
    call slots and whether the API accepts the account are shared by every job."""

    llm: LLMProvider
    limits: LLMSettings
    slots: asyncio.Semaphore  # llm.max_concurrent_requests
    limiter: RateLimiter
    metrics: Metrics
    # Awaited before each call goes out (cluster mode: the job's partition is still ours).
    guard: Callable[[str], Awaitable[None]] | None = None
    _access_denied: tuple[float, str] | None = field(default=None, init=False)  # (until, why)

    async def complete(self, run: PhaseRun, call: LLMCall, on_text: TextSink) -> LLMAnswer | None:
        """The answer to ``call`` for ``run``, its usage priced and added to the phase's;
        None when it failed for a passing reason (after waiting to retry)."""
        if self._access_denied is not None and time.monotonic() < self._access_denied[0]:
            raise ModelAccessDenied(self._access_denied[1])  # no call: it would fail alike
        progress = run.hooks.progress
        progress(Point(call.call, WAITING))
        estimate = estimate_tokens(call.messages, prompts.SYSTEM)
        await self.limiter.acquire(estimate, call.max_tokens)
        attempt = _Attempt(call, estimate, progress, on_text)
        try:
            async with self.slots:
                if self.guard is not None:
                    await self.guard(call.job_id)
                answer = await self.llm.complete(call, attempt.feed)
        except ModelAccessDenied as exc:
            self._failed(run, attempt, exc)
            self._deny_access(str(exc))
            raise
        except PermanentLLMError as exc:
            self._failed(run, attempt, exc)
            raise PhaseFailed(f"{call.phase}: {exc}") from None
        except RetryableLLMError as exc:
            self._failed(run, attempt, exc)
            progress(Point(call.call, WAITING))
            await self._back_off(run, call, exc)
            return None
        answer = self._answered(run, attempt, answer)
        progress(Point(call.call, ANSWERED, attempt.chars))
        chaos.point("after_answer", call.job_id)
        self._check_budget(run)
        return answer

    def _failed(self, run: PhaseRun, attempt: _Attempt, exc: Exception) -> None:
        call = attempt.call
        self.metrics.call_failed(call.phase, attempt.clock)
        self.limiter.settle(attempt.estimate, 0, call.max_tokens, 0)
        run.hooks.record_call(attempt.record(None, str(exc), Usage()))

    def _answered(self, run: PhaseRun, attempt: _Attempt, answer: LLMAnswer) -> LLMAnswer:
        call = attempt.call
        if self._access_denied is not None:
            self._access_denied = None
            self.metrics.readiness.clear("model_access")
            log.info("the model API accepts the account again")
        usage = answer.usage.model_copy(
            update={"cost_usd": self.limits.cost_usd(call.model, answer.usage)}
        )
        self.limiter.settle(
            attempt.estimate,
            usage.input_tokens + usage.cache_creation_input_tokens,
            call.max_tokens,
            usage.output_tokens,
        )
        self.limiter.observe(answer.rate_limits)
        run.hooks.record_call(attempt.record(answer.stop_reason, None, usage))
        self.metrics.call_answered(call.phase, attempt.clock, usage)
        run.usage += usage
        return replace(answer, usage=usage)

    def _deny_access(self, reason: str) -> None:
        """The API refused the account: no job's call is sent for MODEL_ACCESS_RETRY_S
        (then one tries again); /readyz says why."""
        if self._access_denied is None:
            log.error(
                "the model API refused the account (%s): jobs are put aside, not failed; "
                "they continue after a restart with a working key, or by themselves once "
                "the API accepts the account again (tried every %.0f s)",
                reason,
                MODEL_ACCESS_RETRY_S,
            )
        self._access_denied = (time.monotonic() + MODEL_ACCESS_RETRY_S, reason)
        self.metrics.readiness.set(
            "model_access", f"model API refuses the account: {reason}; jobs put aside"
        )

    def _check_budget(self, run: PhaseRun) -> None:
        """The job's tokens (``hooks.tokens_left`` as the phase began; 0: no limit) are
        spent once the phase's calls used more."""
        tokens_left = run.hooks.tokens_left
        if tokens_left and run.usage.total_tokens > tokens_left:
            limit = self.limits.max_tokens_per_job
            raise JobBudgetExceeded(
                f"job used more than llm.max_tokens_per_job = {limit} tokens; stopped"
            )

    async def _back_off(self, run: PhaseRun, call: LLMCall, exc: RetryableLLMError) -> None:
        """Wait before the next try: as long as the API asked (up to a cap), else
        exponentially; a rate limit or overload pauses every job's calls."""
        limits = self.limits
        run.failures += 1
        if run.failures > limits.max_retries:
            raise PhaseFailed(
                f"{call.phase}: model unavailable after {limits.max_retries} retries: {exc}"
            )
        self.metrics.retry(exc.kind)
        self.limiter.observe(exc.headers)
        delay_s = exc.retry_after_s
        if delay_s is None:
            delay_s = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (run.failures - 1))
            delay_s *= 1 - 0.25 * random.random()
        if delay_s > limits.max_retry_after_s:
            raise RetryLater(
                f"{call.phase}: the API asked to wait {delay_s:.0f} s", delay_s=delay_s
            )
        log.warning(
            "model call failed (%s); %d files kept, retrying in %.1f s",
            exc,
            len(run.produced),
            delay_s,
            extra={"job_id": call.job_id, "phase": call.phase, "layout": "indented"},
        )
        if exc.kind in ("rate_limit", "overloaded"):
            self.limiter.pause(delay_s)  # the next acquire() waits, for every job
        else:
            await asyncio.sleep(delay_s)
