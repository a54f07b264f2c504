"""One structlog configuration for every process.

Events, not sentences: `log.info("token.minted", room=..., mint_ms=...)`. `request_id` and `call_id`
are bound through contextvars (`bind_context`), so every line logged while handling a request or a
call carries them. Known secret values are scrubbed from every event as a last line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, cast

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from voice_agent.settings import LogFormat, Settings, otel_pairs

__all__ = [
    "Logger",
    "bind_context",
    "bound_contextvars",
    "clear_contextvars",
    "configure_logging",
    "get_logger",
]

_REDACTED = "[redacted]"

Logger = structlog.typing.FilteringBoundLogger
"""What `get_logger` returns and `bind` keeps: `info`, `warning`, `exception`, `bind`, ..."""


class SecretScrubber:
    """A structlog processor replacing any known secret value found in an event's strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short values would redact ordinary words; real secrets are long.
        self._secrets = tuple(s for s in secrets if len(s) >= 8)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> Mapping[str, Any]:
        if not self._secrets:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._scrub(value)
        return event_dict

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, _REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value


def _secret_values(settings: Settings) -> list[str]:
    values = [
        settings.livekit_api_secret,
        settings.openai_api_key,
        settings.auth_jwt_secret,
        settings.metrics_token,
        settings.staff_token,
        settings.postcall_webhook_secret,
    ]
    secrets = [v.get_secret_value() for v in values if v is not None]
    if settings.otel_exporter_otlp_headers is not None:  # a collector's API key travels here
        secrets.extend(otel_pairs(settings.otel_exporter_otlp_headers.get_secret_value()).values())
    if settings.database_url:
        from urllib.parse import urlsplit

        password = urlsplit(settings.database_url).password
        if password:
            secrets.append(password)
    return secrets


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Configure structlog and the standard library logging once for this process."""
    stream = stream or sys.stderr
    fmt = settings.log_format
    if fmt is LogFormat.AUTO:
        fmt = LogFormat.CONSOLE if stream.isatty() else LogFormat.JSON
    renderer: Any
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretScrubber(_secret_values(settings)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        # Not cached: tests and the CLI reconfigure after modules have made their loggers.
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard library log through the same stream, quieter.
    logging.basicConfig(stream=stream, level=max(level, logging.WARNING), force=True)


def get_logger(name: str | None = None) -> Logger:
    """A structlog logger; `name` becomes the `component` field."""
    # Stays a lazy proxy, so module-level loggers follow a later configure_logging(); it binds to
    # the filtering bound logger `configure_logging` sets up.
    logger = structlog.get_logger(component=name) if name else structlog.get_logger()
    return cast(Logger, logger)


def bind_context(**values: Any) -> None:
    """Bind values (e.g. `call_id`) to every log line in the current context."""
    bind_contextvars(**values)
