"""How the OpenAI providers reach an OpenAI-compatible server, and how its errors become ours.

The SDK's own retries are off by default: the pipeline decides what to do with a failure (try
again, fall back, or tell the caller) from the error's `retryable` flag, within its latency budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx2
import openai

from voice_agent.exceptions import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
)
from voice_agent.settings import Settings

OPENAI_API_URL = "https://api.openai.com/v1"
# Local OpenAI-compatible servers ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "no-key-needed"


@dataclass(frozen=True, slots=True)
class OpenAIConnection:
    """Where an OpenAI-compatible server is and how patiently to talk to it."""

    api_key: str = field(repr=False)
    base_url: str = OPENAI_API_URL
    timeout_s: float = 10.0  # connecting, or silence between bytes of a stream
    max_retries: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIConnection:
        """The connection `OPENAI_API_KEY`, `OPENAI_BASE_URL` and the provider timeout describe."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        if not key:
            if settings.openai_base_url is None:
                raise ConfigError(
                    "OPENAI_API_KEY is not set: set it, or point OPENAI_BASE_URL at an "
                    "OpenAI-compatible server that needs no key"
                )
            key = PLACEHOLDER_API_KEY
        return cls(
            api_key=key,
            base_url=settings.openai_base_url or OPENAI_API_URL,
            timeout_s=settings.provider_timeout_s,
        )

    def client(self) -> openai.AsyncOpenAI:
        """A new SDK client; its owner closes it."""
        return openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )


@contextmanager
def translate_errors(provider: str) -> Iterator[None]:
    """Turn SDK and transport errors raised inside the block into `ProviderError`s."""
    try:
        yield
    except openai.APITimeoutError as e:
        raise ProviderTimeoutError(f"{provider}: no answer in time", provider=provider) from e
    except openai.APIConnectionError as e:
        raise ProviderConnectionError(f"{provider}: {e.message}", provider=provider) from e
    except openai.APIStatusError as e:
        raise ProviderResponseError(
            f"{provider}: HTTP {e.status_code}: {e.message}",
            provider=provider,
            status=e.status_code,
        ) from e
    except openai.APIError as e:  # an error event inside a stream, or a malformed answer
        raise ProviderResponseError(f"{provider}: {e.message}", provider=provider) from e
    except openai.OpenAIError as e:
        raise ProviderError(f"{provider}: {e}", provider=provider) from e
    # Raw body streams (speech) reach the transport directly; the SDK maps these only for SSE.
    except httpx2.TimeoutException as e:
        raise ProviderTimeoutError(f"{provider}: stream went silent", provider=provider) from e
    except httpx2.TransportError as e:
        raise ProviderConnectionError(f"{provider}: stream broke: {e}", provider=provider) from e
