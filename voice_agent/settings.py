"""Configuration: the only module that reads the environment.

Every setting comes from an environment variable or `.env`, is validated here once, and is passed
down as a `Settings` object. The project's own variables are `VOICE_AGENT_` and the field name in
capitals (`eou_silence_ms` is `VOICE_AGENT_EOU_SILENCE_MS`); where an ecosystem has a standard name
(`LIVEKIT_*`, `OPENAI_*`, `REDIS_URL`) the field takes it as its alias. `.env.example` lists
each with its default; `tests/unit/test_settings.py` keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import limits
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "VOICE_AGENT_"


class AuthMode(StrEnum):
    """How `POST /api/voice-token` authenticates its caller."""

    ANONYMOUS = "anonymous"
    JWT = "jwt"


class LogFormat(StrEnum):
    """Log rendering: JSON lines for machines, coloured console for people."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class STTProviderKind(StrEnum):
    """Which speech-to-text provider the agent uses (auto: openai with a key, else local)."""

    AUTO = "auto"
    OPENAI = "openai"
    LOCAL = "local"  # Whisper base on this machine (the `local` extra)


class LLMProviderKind(StrEnum):
    """Which language model provider the agent uses."""

    OPENAI = "openai"


class TTSProviderKind(StrEnum):
    """Which text-to-speech provider the agent uses (auto: openai with a key, else local)."""

    AUTO = "auto"
    OPENAI = "openai"
    LOCAL = "local"  # Piper on this machine (the `local` extra)


class OtelSampler(StrEnum):
    """Which traces are kept (`OTEL_TRACES_SAMPLER`, the OpenTelemetry names)."""

    ALWAYS_ON = "always_on"
    ALWAYS_OFF = "always_off"
    TRACEIDRATIO = "traceidratio"
    PARENTBASED_ALWAYS_ON = "parentbased_always_on"
    PARENTBASED_ALWAYS_OFF = "parentbased_always_off"
    PARENTBASED_TRACEIDRATIO = "parentbased_traceidratio"


def otel_pairs(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (the OTEL_* list format, values percent-encoded) as a dict; a ValueError
    names an item that is not `key=value`."""
    from urllib.parse import unquote

    pairs = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = unquote(value.strip())
    return pairs


class Settings(BaseSettings):
    """All configuration, read once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,  # field `x_y` is VOICE_AGENT_X_Y; ecosystem names are aliases
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means "use the default"
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # LiveKit (standard names)
    livekit_url: str = Field("ws://127.0.0.1:7880", validation_alias="LIVEKIT_URL")
    livekit_api_key: str | None = Field(None, validation_alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr | None = Field(None, validation_alias="LIVEKIT_API_SECRET")
    livekit_server_bin: Path | None = Field(None, validation_alias="LIVEKIT_SERVER_BIN")

    # Model providers (standard names; used by the agent worker)
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    stt: STTProviderKind = STTProviderKind.AUTO
    llm: LLMProviderKind = LLMProviderKind.OPENAI
    tts: TTSProviderKind = TTSProviderKind.AUTO
    stt_model: str = Field("gpt-4o-mini-transcribe", min_length=1)
    llm_model: str = Field("gpt-4o-mini", min_length=1)
    tts_model: str = Field("gpt-4o-mini-tts", min_length=1)
    tts_voice: str = Field("alloy", min_length=1)
    # The callers' language (ISO 639-1, e.g. "en"); empty: the STT detects it on every turn.
    stt_language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    # The local STT (Whisper base): the encoder window for turns that fit it with 1 s to spare
    # (30: always Whisper's full window; longer turns always get it), and its CPU threads (one
    # measured faster than two for a turn, pinned to one core or not: docs/benchmarks.md).
    local_stt_window_s: int = Field(10, ge=4, le=30)
    local_stt_threads: int = Field(1, ge=1, le=64)
    # Fallback chains: the provider that takes over when the primary fails before answering.
    stt_fallback: STTProviderKind | None = None
    llm_fallback: LLMProviderKind | None = None
    tts_fallback: TTSProviderKind | None = None
    fallback_after_s: float = Field(3.0, gt=0, le=60)
    # How long a provider may stay silent (connecting, or between bytes of a stream).
    provider_timeout_s: float = Field(10.0, gt=0, le=300)

    # Agent worker and call behaviour
    instructions: str = Field(
        "You are a friendly, concise voice assistant for a customer support line. Answer in one "
        "or two short spoken sentences, without lists, markdown or emoji.",
        min_length=1,
        max_length=20_000,
    )
    greeting: str = Field(
        "Hello! How can I help you today?",
        min_length=1,
        max_length=500,
    )
    eou_silence_ms: int = Field(500, ge=100, le=5000)
    # End of turn (docs/architecture.md, "A turn"): the VAD ends an utterance at a short pause,
    # where the turn so far is transcribed and answered speculatively (unplayed); the turn
    # detector then commits it. "transcript" ends a complete utterance once eou_complete_ms of
    # silence has passed, waits eou_incomplete_ms for an unfinished one and eou_silence_ms when
    # it has no words; "silence" ends every turn after eou_silence_ms. "smart_turn" asks the
    # Smart Turn v3.2 acoustic model (P(end) >= smart_turn_threshold ends the turn, else
    # eou_incomplete_ms); "hybrid" ends a turn at once only when the words and the model agree it
    # is complete, waits eou_unsure_ms when they disagree. Both need `voice-agent
    # fetch-turn-model` (the file at smart_turn_model, default
    # $XDG_CACHE_HOME/voice-agent/models/); without it: "transcript". stt_punctuates: the STT
    # ends finished sentences with . ? or ! (Whisper and OpenAI's models do), so the rules read
    # words without one as unfinished; "auto": true for Whisper on this machine, otherwise from
    # the call's first transcript that has such a mark (an STT that writes none never turns it
    # on). eou_level_pitch_ms ("transcript"): complete words read as a statement whose voice did
    # not fall at the end ("I need eggs," heard as "I need eggs.") wait this long (0: off).
    # eou_min_confidence ("transcript", "hybrid"): complete words the STT scored below this
    # (0-1; local Whisper and OpenAI's gpt-4o transcription models say) are read as unfinished:
    # Whisper guesses a whole sentence from a fragment cut at a pause, and scores the guess low
    # (0: off).
    speech_pause_ms: int = Field(120, ge=60, le=5000)
    eou_complete_ms: int = Field(250, ge=0, le=5000)
    stt_punctuates: Literal["auto"] | bool = "auto"
    turn_detector: Literal["transcript", "silence", "smart_turn", "hybrid"] = "transcript"
    eou_incomplete_ms: int = Field(1500, ge=100, le=10_000)
    smart_turn_threshold: float = Field(0.5, ge=0, le=1)
    eou_unsure_ms: int = Field(1500, ge=100, le=10_000)
    eou_level_pitch_ms: int = Field(1000, ge=0, le=10_000)
    eou_min_confidence: float = Field(0.6, ge=0, lt=1)
    smart_turn_model: Path | None = None
    xdg_cache_home: Path | None = Field(None, validation_alias="XDG_CACHE_HOME")
    speculation_max_per_turn: int = Field(3, ge=0, le=20)
    speculation_max_wasted: int = Field(50, ge=0, le=100_000)
    min_interruption_ms: int = Field(400, ge=100, le=5000)
    backchannel_max_ms: int = Field(1200, ge=0, le=5000)
    max_call_s: float = Field(1800.0, gt=0, le=86_400)
    user_silence_timeout_s: float = Field(60.0, gt=0, le=3600)
    max_consecutive_failures: int = Field(3, ge=1, le=20)
    context_token_budget: int = Field(4000, ge=256, le=1_000_000)
    max_jobs: int = Field(20, ge=1, le=1000)
    drain_timeout_s: float = Field(600.0, gt=0, le=86_400)
    journal_recovery_interval_s: float = Field(60.0, gt=0, le=86_400)
    worker_metrics_port: int | None = Field(None, ge=0, le=65535)

    # Tools and agent profile
    tools_path: Path = Path("tools")
    profile: Path | None = None
    tool_timeout_s: float = Field(5.0, gt=0, le=300)
    tool_breaker_failures: int = Field(3, ge=1, le=100)
    tool_breaker_cooldown_s: float = Field(30.0, gt=0, le=3600)
    confirm_timeout_s: float = Field(20.0, gt=0, le=300)

    # Queue and post-call
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    # Longest wait between two tries to reach Redis again (hand-overs waiting in the spool, the
    # post-call worker's reconnects); the waits grow from 0.5 s up to this, with jitter.
    redis_retry_max_s: float = Field(30.0, ge=0.5, le=3600)
    database_url: str | None = None
    database_timeout_s: float = Field(10.0, gt=0, le=300)
    staff_token: SecretStr | None = None
    postcall_max_tries: int = Field(5, ge=1, le=50)
    postcall_concurrency: int = Field(4, ge=1, le=256)
    postcall_retry_max_s: float = Field(300.0, ge=1, le=86_400)
    postcall_attempt_timeout_s: float = Field(120.0, ge=1, le=3600)
    postcall_review_confidence: float = Field(0.6, ge=0, le=1)
    postcall_webhook_url: str | None = None
    postcall_webhook_secret: SecretStr | None = None

    # Token service
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_rtc_url: str | None = None
    auth_mode: AuthMode = AuthMode.ANONYMOUS
    auth_jwt_secret: SecretStr | None = None
    auth_jwt_public_key_file: Path | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    token_ttl_seconds: int = Field(600, ge=60, le=3600)
    agent_name: str = Field(
        "voice-agent",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    token_rate_limit: str = "10/minute"  # noqa: S105 - a rate, not a secret
    max_body_bytes: int = Field(4096, ge=256, le=1_048_576)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    trust_forwarded_for: bool = False

    # Operations
    log_level: str = "info"
    log_format: LogFormat = LogFormat.AUTO
    data_dir: Path = Path(".data")
    metrics_token: SecretStr | None = None
    readiness_timeout_s: float = Field(2.0, gt=0, le=30)
    # Supervision (`voice-agent dev`): a child that exits is restarted with backoff; one that
    # exits more than `restart_limit` times within `restart_window_s` stops the stack.
    restart_limit: int = Field(5, ge=0, le=1000)
    restart_window_s: float = Field(60.0, gt=0, le=86_400)

    # Traces (OpenTelemetry's standard names; off unless an endpoint is set). These are passed to
    # the SDK explicitly (`voice_agent/tracing.py`); it reads no other OTEL_* variable for what
    # they configure.
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        "http/protobuf", validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_HEADERS"
    )
    otel_exporter_otlp_timeout: int = Field(
        10_000, ge=100, le=600_000, validation_alias="OTEL_EXPORTER_OTLP_TIMEOUT"
    )  # milliseconds, as the standard says
    otel_exporter_otlp_compression: Literal["none", "gzip", "deflate"] = Field(
        "none", validation_alias="OTEL_EXPORTER_OTLP_COMPRESSION"
    )
    otel_exporter_otlp_certificate: Path | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    otel_traces_exporter: Literal["otlp", "none"] = Field(
        "otlp", validation_alias="OTEL_TRACES_EXPORTER"
    )
    otel_service_name: str | None = Field(
        None, min_length=1, max_length=200, validation_alias="OTEL_SERVICE_NAME"
    )
    otel_resource_attributes: str | None = Field(
        None, max_length=4096, validation_alias="OTEL_RESOURCE_ATTRIBUTES"
    )
    otel_traces_sampler: OtelSampler = Field(
        OtelSampler.PARENTBASED_ALWAYS_ON, validation_alias="OTEL_TRACES_SAMPLER"
    )
    otel_traces_sampler_arg: float | None = Field(
        None, ge=0, le=1, validation_alias="OTEL_TRACES_SAMPLER_ARG"
    )
    otel_bsp_schedule_delay: int = Field(
        5000, ge=1, le=600_000, validation_alias="OTEL_BSP_SCHEDULE_DELAY"
    )  # milliseconds between two exports of the buffered spans
    otel_sdk_disabled: bool = Field(False, validation_alias="OTEL_SDK_DISABLED")

    @field_validator("token_rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError as e:
            raise ValueError(f"not a rate limit such as '10/minute': {value!r}") from e
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origins must be explicit http(s) origins, got {origin!r}")
        return value

    @field_validator("otel_resource_attributes", "otel_exporter_otlp_headers")
    @classmethod
    def _check_pairs(cls, value: Any) -> Any:
        if value is not None:
            otel_pairs(value.get_secret_value() if isinstance(value, SecretStr) else value)
        return value

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL (OTLP over HTTP), got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log level must be debug, info, warning or error")
        return value

    @field_validator("livekit_url", "public_rtc_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError(f"expected a ws(s):// or http(s):// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_jwt_mode(self) -> Settings:
        if self.auth_mode is AuthMode.JWT:
            if (self.auth_jwt_secret is None) == (self.auth_jwt_public_key_file is None):
                raise ValueError(
                    "jwt auth mode needs exactly one of VOICE_AGENT_AUTH_JWT_SECRET (HS256) "
                    "or VOICE_AGENT_AUTH_JWT_PUBLIC_KEY_FILE (RS256)"
                )
            if not self.auth_jwt_audience or not self.auth_jwt_issuer:
                raise ValueError(
                    "jwt auth mode needs VOICE_AGENT_AUTH_JWT_AUDIENCE and "
                    "VOICE_AGENT_AUTH_JWT_ISSUER"
                )
        return self

    @cached_property
    def rate_limit_item(self) -> limits.RateLimitItem:
        """The parsed token rate limit."""
        return limits.parse(self.token_rate_limit)

    @property
    def otel_traces_endpoint(self) -> str | None:
        """Where spans are sent: the traces endpoint as given, else `/v1/traces` under the
        general OTLP endpoint (the standard's rule); None when tracing is not configured."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def otel_resource_attribute_map(self) -> dict[str, str]:
        """`OTEL_RESOURCE_ATTRIBUTES` as a dict."""
        return otel_pairs(self.otel_resource_attributes or "")

    @property
    def browser_rtc_url(self) -> str:
        """The LiveKit URL the browser connects to (may differ from the server-side one)."""
        return self.public_rtc_url or self.livekit_url

    def livekit_credentials(self) -> tuple[str, str]:
        """API key and secret, or a clear error naming what is missing."""
        from voice_agent.exceptions import ConfigError

        if not self.livekit_api_key or self.livekit_api_secret is None:
            raise ConfigError(
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set "
                "(`voice-agent dev` generates a pair for its own LiveKit server)"
            )
        return self.livekit_api_key, self.livekit_api_secret.get_secret_value()


def env_name(field: str) -> str:
    """The environment variable that sets the field named `field`."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and `.env`) once; overrides win, for tests and the CLI."""
    return Settings(**overrides)


def environment_value(name: str, *, env_file: Path | None = Path(".env")) -> str | None:
    """A variable that configuration names at run time (an MCP server's `headers_env` in the agent
    profile): from the process environment, else from `env_file`; None when unset or empty."""
    import os

    value = os.environ.get(name)
    if not value and env_file is not None and env_file.is_file():
        from dotenv import dotenv_values

        value = dotenv_values(env_file).get(name)
    return value or None


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`, for children that read their own settings."""
    import os

    env = dict(os.environ)
    env.update(overrides)
    return env
