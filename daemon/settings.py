"""Settings: ``config/default.toml`` values as code defaults, overlaid by ``--config FILE``,
overlaid by ``CODEGEND_<SECTION>__<KEY>`` environment variables (pydantic-settings).

The API key is not a setting: the Anthropic SDK reads ``ANTHROPIC_API_KEY`` itself, so
it never passes through codegend's configuration, logs or store.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon.errors import ConfigError
from daemon.states import PHASE_BY_STATE, PHASE_NAMES

DEFAULT_MODEL = "claude-sonnet-5-5"
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "config_file", default=None
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "embedded"
    requests_topic: str = "codegen.requests"
    events_topic: str = "codegen.events"
    dead_letter_topic: str = "codegen.requests.dlq"
    group_id: str = "codegend"
    client_id: str = "codegend"
    topic_partitions: int = Field(default=3, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_publish_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    dead_letter_max_bytes: int = Field(default=900_000, ge=1024)
    acks: Literal["all", "1", "0"] = "all"
    enable_idempotence: bool = False
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""


class StoreSettings(_Section):
    path: Path = Path("codegend.db")


class LLMSettings(_Section):
    provider: Literal["anthropic", "replay"] = "anthropic"
    model: str = DEFAULT_MODEL
    max_concurrent_requests: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    max_calls_per_phase: int = Field(default=12, ge=1)
    max_repairs: int = Field(default=2, ge=0)
    max_tokens_ceiling: int = Field(default=16_000, ge=256)
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    cassette_dir: Path | None = None


class JobsSettings(_Section):
    max_concurrent: int = Field(default=4, ge=1)
    execution: Literal["sequential", "parallel"] = "sequential"
    shutdown_grace_s: float = Field(default=30.0, ge=0)


class PhaseSettings(_Section):
    max_tokens: int | None = Field(default=None, ge=256)
    model: str | None = None


class OutputSettings(_Section):
    dir: Path = Path("out")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CODEGEND_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    phases: dict[str, PhaseSettings] = Field(default_factory=dict)
    output: OutputSettings = Field(default_factory=OutputSettings)

    @field_validator("phases", mode="before")
    @classmethod
    def _phase_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        normalised = {str(key).upper(): item for key, item in value.items()}
        unknown = sorted(set(normalised) - set(PHASE_NAMES))
        if unknown:
            raise ValueError(f"unknown phase(s) {unknown}; allowed: {', '.join(PHASE_NAMES)}")
        return normalised

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def max_tokens_for(self, state: str, overrides: dict[str, int] | None = None) -> int:
        """The per-call budget of a phase: request override, then config, then the registry."""
        if overrides and state in overrides:
            return overrides[state]
        configured = self.phases.get(state)
        if configured and configured.max_tokens:
            return configured.max_tokens
        return PHASE_BY_STATE[state].max_tokens

    def model_for(self, state: str, requested: str | None = None) -> str:
        configured = self.phases.get(state)
        return requested or (
            configured.model if configured and configured.model else self.llm.model
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; a bad key or value raises ConfigError naming the key."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _config_file.reset(token)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        allowed = error.get("ctx", {}).get("expected")
        hint = f" (allowed: {allowed})" if allowed else ""
        lines.append(f"{key}: {error['msg']}{hint}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
