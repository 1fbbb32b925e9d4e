"""What a request may spend: its budgets are capped, its model must be allowed, and every
model that can be called has a price."""

import pytest

from daemon.callpolicy import budget_refusal
from daemon.errors import ConfigError, JobBudgetExceeded
from daemon.settings import DEFAULT_PRICES, load_settings

PRICE = {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.0}


def test_a_request_budget_is_capped_by_the_ceiling():
    settings = load_settings()
    ceiling = settings.llm.max_tokens_ceiling
    assert settings.max_tokens_for("DB", {"DB": 128_000}) == ceiling == 16_000
    assert settings.max_tokens_for("DB", {"DB": 3000}) == 3000
    assert settings.max_tokens_for("DB", {"ARCH": 128_000}) == 2000


def test_by_default_a_request_may_choose_only_a_priced_model():
    settings = load_settings()
    assert settings.allowed_models() == list(DEFAULT_PRICES)
    assert settings.model_for("DB", "claude-haiku-5-5") == "claude-haiku-5-5"
    # a job stored before its model was disallowed runs on the configured one
    assert settings.model_for("DB", "gpt-x") == settings.llm.model


def test_allowed_models_narrow_the_choice_and_keep_the_configured_ones():
    settings = load_settings(
        llm={"allowed_models": ["claude-haiku-5-5"]},
        phases={"CONFIG": {"model": "claude-opus-5-5"}},
    )
    assert settings.allowed_models() == ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"]


@pytest.mark.parametrize(
    "sections",
    [
        {"llm": {"model": "claude-unpriced"}},
        {"phases": {"DB": {"model": "claude-unpriced"}}},
        {"llm": {"allowed_models": ["claude-unpriced"]}},
    ],
)
def test_a_model_without_a_price_stops_the_configuration(sections):
    with pytest.raises(ConfigError) as raised:
        load_settings(**sections)
    message = str(raised.value)
    assert "claude-unpriced" in message and "llm.prices" in message and "\n" not in message


def test_a_price_of_its_own_makes_a_model_usable_and_keeps_the_others():
    settings = load_settings(llm={"model": "claude-new", "prices": {"claude-new": PRICE}})
    assert set(settings.llm.prices) == {*DEFAULT_PRICES, "claude-new"}
    assert settings.llm.cost_usd("claude-new", _usage(output_tokens=1_000_000)) == 2.0


def _usage(**tokens):
    from daemon.contract import Usage

    return Usage(**tokens)


def test_a_job_with_no_tokens_left_may_not_start_a_phase():
    def never() -> int:
        raise AssertionError("without a limit the tokens left are not looked up")

    assert budget_refusal(0, never) is None
    assert budget_refusal(1000, lambda: 1) is None
    refusal = budget_refusal(1000, lambda: 0)
    assert isinstance(refusal, JobBudgetExceeded)
    assert str(refusal) == "job used its llm.max_tokens_per_job = 1000 tokens"
    assert isinstance(budget_refusal(1000, lambda: -5), JobBudgetExceeded)
