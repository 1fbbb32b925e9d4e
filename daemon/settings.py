"""Settings: ``config/default.toml`` values as code defaults, overlaid by ``--config FILE``,
overlaid by ``CODEGEND_<SECTION>__<KEY>`` environment variables (pydantic-settings).

The API key is not a setting: the Anthropic SDK reads ``ANTHROPIC_API_KEY`` itself, so
it never passes through codegend's configuration, logs or store.
"""

from __future__ import annotations

import contextvars
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from daemon.contract import Usage
from daemon.errors import ConfigError
from daemon.states import PHASE_BY_NAME, PHASE_NAMES

DEFAULT_MODEL = "claude-sonnet-5-5"
EMBEDDED = "embedded"  # kafka.bootstrap_servers: a private in-memory broker for this process
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "config_file", default=None
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = EMBEDDED
    requests_topic: str = "codegen.requests"
    events_topic: str = "codegen.events"
    dead_letter_topic: str = "codegen.requests.dlq"
    group_id: str = "codegend"
    client_id: str = "codegend"
    topic_partitions: int = Field(default=3, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    fetch_max_wait_ms: int = Field(default=100, ge=1)
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
    # Cluster mode (docs/cluster-design.md): on when changelog_topic is set and the broker
    # is not the embedded one, whose topics live in memory and are private to one daemon.
    changelog_topic: str = "codegen.changelog"
    commands_topic: str = Field(default="codegen.commands", min_length=1)
    changelog_min_compaction_lag_ms: int = Field(default=3_600_000, ge=0)
    restore_timeout_s: float = Field(default=120.0, gt=0)
    transactions: bool = False

    @property
    def cluster_mode(self) -> bool:
        return bool(self.changelog_topic) and self.bootstrap_servers != EMBEDDED

    @property
    def changelog_max_bytes(self) -> int:
        """The largest changelog record: a file as large as an event may be, or a request
        as large as intake takes, with room for the record's fields and headers."""
        return max(self.max_publish_bytes, self.max_request_bytes) + 64 * 1024

    def cluster_topics(self) -> list[str]:
        """The topics of cluster mode (changelog, commands); none when it is off."""
        return [self.changelog_topic, self.commands_topic] if self.cluster_mode else []


class StoreSettings(_Section):
    path: Path = Path("codegend.db")
    # Finished jobs and published events older than this are deleted (0 = keep forever).
    retention_days: float = Field(default=30.0, ge=0)


class ModelPrice(_Section):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    cache_write: float = Field(ge=0)


DEFAULT_PRICES = {
    "claude-sonnet-5-5": ModelPrice(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "claude-haiku-5-5": ModelPrice(input=1.0, output=5.0, cache_read=0.10, cache_write=1.25),
    "claude-opus-5-5": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
}


class LLMSettings(_Section):
    provider: Literal["anthropic", "replay"] = "anthropic"
    model: str = DEFAULT_MODEL
    http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    max_concurrent_requests: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)
    requests_per_min: int = Field(default=1000, ge=0)
    input_tokens_per_min: int = Field(default=400_000, ge=0)
    output_tokens_per_min: int = Field(default=80_000, ge=0)
    max_tokens_per_job: int = Field(default=2_000_000, ge=0)
    prompt_caching: bool = True
    max_calls_per_phase: int = Field(default=12, ge=1)
    max_repairs: int = Field(default=2, ge=0)
    max_tokens_ceiling: int = Field(default=16_000, ge=256)
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    call_deadline_s: float = Field(default=600.0, gt=0)
    max_answer_bytes: int = Field(default=16 * 1024 * 1024, ge=65536)
    cassette_dir: Path | None = None
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Empty: the models priced in ``prices``. The configured models are always allowed.
    allowed_models: list[str] = Field(default_factory=list)

    @field_validator("prices", mode="after")
    @classmethod
    def _over_the_default_prices(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        # A [llm.prices.<model>] table sets one model's price; the others keep theirs.
        return {**DEFAULT_PRICES, **value}

    def cost_usd(self, model: str, usage: Usage) -> float:
        price = self.prices.get(model)
        if price is None:
            return 0.0
        per_token = 1 / 1_000_000
        return per_token * (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_read_input_tokens * price.cache_read
            + usage.cache_creation_input_tokens * price.cache_write
        )


class JobsSettings(_Section):
    max_concurrent: int = Field(default=4, ge=1)
    execution: Literal["sequential", "parallel"] = "sequential"
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    max_phase_crashes: int = Field(default=3, ge=1)
    max_unfinished: int = Field(default=10_000, ge=0)
    code_checks: bool = True
    check_timeout_s: float = Field(default=10.0, gt=0)
    check_max_file_bytes: int = Field(default=1024 * 1024, ge=1024)


class VerifySettings(_Section):
    """Project verification (the VERIFY state after CONFIG)."""

    enabled: bool = True
    toolchain: bool = False  # runs generated code: npm, tsc, the build, pip and the app itself
    max_rounds: int = Field(default=2, ge=0)
    timeout_s: float = Field(default=600.0, gt=0)
    memory_mb: int = Field(default=4096, ge=256)
    cache_dir: Path = Path(".codegend-cache")


class PhaseSettings(_Section):
    max_tokens: int | None = Field(default=None, ge=256)
    model: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class OutputSettings(_Section):
    dir: Path = Path("out")


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CODEGEND_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    phases: dict[str, PhaseSettings] = Field(default_factory=dict)
    output: OutputSettings = Field(default_factory=OutputSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

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
        """The per-call budget of a phase: request override (at most llm.max_tokens_ceiling:
        a request does not raise spending past what the operator allows), then config, then
        the registry."""
        if overrides and state in overrides:
            return min(overrides[state], self.llm.max_tokens_ceiling)
        configured = self.phases.get(state)
        if configured and configured.max_tokens:
            return configured.max_tokens
        return PHASE_BY_NAME[state].max_tokens

    def timeout_for(self, state: str) -> float:
        configured = self.phases.get(state)
        return configured.timeout_s if configured and configured.timeout_s else self.llm.timeout_s

    def model_for(self, state: str, requested: str | None = None) -> str:
        """The request's model if it is allowed (intake rejects one that is not; a job
        stored before the model was disallowed falls back), else the configured one."""
        if requested and requested in self.allowed_models():
            return requested
        configured = self.phases.get(state)
        return configured.model if configured and configured.model else self.llm.model

    def configured_models(self) -> list[str]:
        """llm.model and every phases.<STATE>.model, without repeats."""
        models = [self.llm.model, *(p.model for p in self.phases.values() if p.model)]
        return list(dict.fromkeys(models))

    def allowed_models(self) -> list[str]:
        """The models a request may choose in options.model: llm.allowed_models (by default
        the models priced in llm.prices), and the configured models."""
        chosen = self.llm.allowed_models or list(self.llm.prices)
        return list(dict.fromkeys([*chosen, *self.configured_models()]))

    def unpriced_models(self) -> list[str]:
        """Models that may be called but have no entry in llm.prices (their cost would be
        unknown): a valid configuration has none."""
        return [m for m in self.allowed_models() if m not in self.llm.prices]


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; a bad key or value raises ConfigError naming the key."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    token = _config_file.set(config_file)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _origins(config_file, overrides))) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _config_file.reset(token)
    _check_prices(settings)
    _check_cluster(settings.kafka)
    return settings


def _check_prices(settings: Settings) -> None:
    """Every model that may be called has a price: a cost estimate is never a silent $0."""
    unpriced = settings.unpriced_models()
    if unpriced:
        raise ConfigError(
            f"model(s) {', '.join(unpriced)} (llm.model, phases.<STATE>.model or "
            'llm.allowed_models) have no price in llm.prices; add [llm.prices."<model>"] '
            "with input, output, cache_read and cache_write (US$ per million tokens)"
        )


def _check_cluster(kafka: KafkaSettings) -> None:
    """The cluster topics are topics of their own; transactions need cluster mode on Kafka."""
    others = {kafka.requests_topic, kafka.events_topic, kafka.dead_letter_topic}
    if kafka.changelog_topic and (
        kafka.changelog_topic == kafka.commands_topic
        or others & {kafka.changelog_topic, kafka.commands_topic}
    ):
        raise ConfigError(
            "kafka.changelog_topic and kafka.commands_topic must differ from each other and "
            "from kafka.requests_topic, kafka.events_topic and kafka.dead_letter_topic"
        )
    if kafka.transactions and not kafka.cluster_mode:
        raise ConfigError(
            "kafka.transactions = true needs cluster mode: kafka.changelog_topic set and a "
            'Kafka cluster in kafka.bootstrap_servers (the "embedded" broker has no transactions)'
        )
    if kafka.transactions and kafka.acks != "all":
        raise ConfigError(f'kafka.transactions = true needs kafka.acks = "all", not "{kafka.acks}"')
    if kafka.transactions:
        # Per-partition transactional producers (docs/cluster-design.md 3.5) are not built:
        # refused rather than ignored. Cluster mode fences by claims without them.
        raise ConfigError(
            "kafka.transactions = true is not supported yet; cluster mode fences a lost "
            "partition's writer by claims and read-back without transactions (leave it false)"
        )


# ---------------------------------------------------------------------------
# Where each value comes from (``codegend config``)

Source = Literal["default", "file", "environment", "argument"]
MASK = "********"


@dataclass(frozen=True)
class ConfigEntry:
    """One effective setting: its dotted key, its value (secrets masked), where it was set."""

    key: str
    value: Any
    source: Source


def describe_settings(config_file: Path | None = None, **overrides: Any) -> list[ConfigEntry]:
    """Every effective setting with its source, in section order; secrets are masked.

    Each phase's ``max_tokens`` is listed with its effective value (the registry's default
    unless set); a phase's ``model`` only when set.
    """
    settings = load_settings(config_file, **overrides)
    origins = _origins(config_file, overrides)
    values = _flatten(settings.model_dump(exclude={"phases"}))
    for state in PHASE_NAMES:
        values[f"phases.{state}.max_tokens"] = settings.max_tokens_for(state)
        configured = settings.phases.get(state)
        if configured and configured.model:
            values[f"phases.{state}.model"] = configured.model
    return [
        ConfigEntry(key, _shown(value), origins.get(key, "default"))
        for key, value in values.items()
    ]


def _origins(config_file: Path | None, overrides: dict[str, Any]) -> dict[str, Source]:
    """Dotted key -> the source that sets it, by precedence (argument > environment > file)."""
    layers: list[tuple[Source, Any]] = [("argument", lambda: overrides)]
    layers.append(("environment", lambda: EnvSettingsSource(Settings)()))
    if config_file is not None:
        layers.append(("file", lambda: TomlConfigSettingsSource(Settings, config_file)()))
    origins: dict[str, Source] = {}
    for source, read in reversed(layers):
        try:
            data = read()
        except (SettingsError, OSError, tomllib.TOMLDecodeError):
            continue  # load_settings reports these
        origins.update(dict.fromkeys(_flatten(data), source))
    return origins


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, BaseModel):
        data = dict(data)
    if not isinstance(data, dict) or not data:
        return {prefix: data} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).upper() if prefix == "phases" else str(key).lower()
        flat.update(_flatten(value, f"{prefix}.{name}" if prefix else name))
    return flat


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    return value


def _describe(exc: ValidationError, origins: dict[str, Source] | None = None) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        where = _where(key, (origins or {}).get(key))
        lines.append(f"{key}: {_problem(error, key)}{where}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _problem(error: ErrorDetails, key: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key; {_known_keys(key)}"
    expected = error.get("ctx", {}).get("expected")
    if error["type"] == "literal_error" and expected:
        # The choices of a Literal are never secrets: the bad value may be shown.
        return f"{error['input']!r} is not allowed; allowed: {expected}"
    return error["msg"]


def _known_keys(key: str) -> str:
    section, _, _ = key.rpartition(".")
    model: type[BaseModel] = Settings
    if section:
        field = Settings.model_fields.get(section)
        model = field.annotation if field and isinstance(field.annotation, type) else Settings
    allowed = list(model.model_fields)
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key.rpartition(".")[2], allowed, n=1)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return "allowed: " + ", ".join(f"{prefix}{name}" for name in allowed)


def _where(key: str, source: Source | None) -> str:
    if source == "environment":
        return f" (from environment variable CODEGEND_{key.upper().replace('.', '__')})"
    if source == "file":
        config_file = _config_file.get()
        return f" (from {config_file})" if config_file else " (from the config file)"
    return ""
