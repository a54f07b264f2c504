"""Configuration: the only module that reads the environment.

Every setting comes from an environment variable or `.env`, is validated here once, and is passed
down as a `Settings` object. Names follow the ecosystem where one exists (`LIVEKIT_*`, `OPENAI_*`,
`REDIS_URL`); the project's own start with `VOICE_AGENT_`. `.env.example` lists each with its
default; `tests/unit/test_settings.py` keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import limits
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AuthMode(StrEnum):
    """How `POST /api/voice-token` authenticates its caller."""

    ANONYMOUS = "anonymous"
    JWT = "jwt"


class LogFormat(StrEnum):
    """Log rendering: JSON lines for machines, coloured console for people."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


def _env(name: str) -> Any:
    """Bind a field to exactly one environment variable name."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """All configuration, read once at start-up."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # LiveKit (standard names)
    livekit_url: str = Field("ws://127.0.0.1:7880", validation_alias=_env("LIVEKIT_URL"))
    livekit_api_key: str | None = Field(None, validation_alias=_env("LIVEKIT_API_KEY"))
    livekit_api_secret: SecretStr | None = Field(None, validation_alias=_env("LIVEKIT_API_SECRET"))
    livekit_server_bin: Path | None = Field(None, validation_alias=_env("LIVEKIT_SERVER_BIN"))

    # Model providers (standard names; used by the agent worker)
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))

    # Queue
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))

    # Token service
    host: str = Field("127.0.0.1", validation_alias=_env("VOICE_AGENT_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=_env("VOICE_AGENT_PORT"))
    public_rtc_url: str | None = Field(None, validation_alias=_env("VOICE_AGENT_PUBLIC_RTC_URL"))
    auth_mode: AuthMode = Field(AuthMode.ANONYMOUS, validation_alias=_env("VOICE_AGENT_AUTH_MODE"))
    auth_jwt_secret: SecretStr | None = Field(
        None, validation_alias=_env("VOICE_AGENT_AUTH_JWT_SECRET")
    )
    auth_jwt_public_key_file: Path | None = Field(
        None, validation_alias=_env("VOICE_AGENT_AUTH_JWT_PUBLIC_KEY_FILE")
    )
    auth_jwt_audience: str | None = Field(
        None, validation_alias=_env("VOICE_AGENT_AUTH_JWT_AUDIENCE")
    )
    auth_jwt_issuer: str | None = Field(None, validation_alias=_env("VOICE_AGENT_AUTH_JWT_ISSUER"))
    token_ttl_seconds: int = Field(
        600, ge=60, le=3600, validation_alias=_env("VOICE_AGENT_TOKEN_TTL_SECONDS")
    )
    agent_name: str = Field(
        "voice-agent",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        validation_alias=_env("VOICE_AGENT_AGENT_NAME"),
    )
    token_rate_limit: str = Field(
        "10/minute", validation_alias=_env("VOICE_AGENT_TOKEN_RATE_LIMIT")
    )
    max_body_bytes: int = Field(
        4096, ge=256, le=1_048_576, validation_alias=_env("VOICE_AGENT_MAX_BODY_BYTES")
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("VOICE_AGENT_CORS_ORIGINS")
    )
    trust_forwarded_for: bool = Field(
        False, validation_alias=_env("VOICE_AGENT_TRUST_FORWARDED_FOR")
    )

    # Operations
    log_level: str = Field("info", validation_alias=_env("VOICE_AGENT_LOG_LEVEL"))
    log_format: LogFormat = Field(LogFormat.AUTO, validation_alias=_env("VOICE_AGENT_LOG_FORMAT"))
    data_dir: Path = Field(Path(".data"), validation_alias=_env("VOICE_AGENT_DATA_DIR"))
    metrics_token: SecretStr | None = Field(
        None, validation_alias=_env("VOICE_AGENT_METRICS_TOKEN")
    )
    readiness_timeout_s: float = Field(
        2.0, gt=0, le=30, validation_alias=_env("VOICE_AGENT_READINESS_TIMEOUT_S")
    )

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


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and `.env`) once; overrides win, for tests and the CLI."""
    return Settings(**overrides)


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`, for children that read their own settings."""
    import os

    env = dict(os.environ)
    env.update(overrides)
    return env
