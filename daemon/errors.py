"""Every error codegend raises on purpose. A class's docstring is its default message."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.contract import Usage  # for annotations only: this module imports none of ours


class CodegendError(Exception):
    """codegend failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class UsageError(CodegendError):
    """The command was not given what it needs."""


class ConfigError(CodegendError):
    """The configuration is not valid."""


class StoreError(CodegendError):
    """The store cannot be used."""


class StoreFull(StoreError):
    """The store's disk is full: nothing was written; try again once there is space."""


class IllegalMove(StoreError):
    """The state machine does not allow this move from the state the store holds (a second
    process changed the job, or a bug)."""


class JobNotFound(CodegendError):
    """No such job."""


class BrokerError(CodegendError):
    """The broker could not be started or used."""


class BadRequest(CodegendError):
    """The message is not a valid generation request."""


class UnsafePath(CodegendError):
    """The model returned a path that may not be written."""


class LLMError(CodegendError):
    """The model call failed."""


class RetryableLLMError(LLMError):
    """The model call failed for a passing reason (rate limit, overload, network); try again later."""

    def __init__(
        self,
        message: str | None = None,
        kind: str = "network",
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind  # rate_limit, overloaded, server, network, stream
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class PermanentLLMError(LLMError):
    """The model call failed for a reason that retrying will not fix."""


class ModelAccessDenied(LLMError):
    """The API refused the account (no key, a wrong key, no access, no credit): every call
    of every job would fail alike, so jobs are put aside, not failed."""


class ReplayMissing(PermanentLLMError):
    """The cassette holds no answer for this call."""


class RetryLater(CodegendError):
    """The model asked for a longer wait than a phase should hold its place for."""

    def __init__(self, message: str | None = None, delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PhaseFailed(CodegendError):
    """The phase could not produce a valid answer."""

    def __init__(self, message: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class JobBudgetExceeded(PhaseFailed):
    """The job used more tokens than llm.max_tokens_per_job allows."""
