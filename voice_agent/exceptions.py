"""The error tree.

VoiceAgentError                 base; `retryable` says whether trying again may help
├── ConfigError                 a setting is missing or wrong; found at start-up
├── AuthError                   the caller could not be authenticated (HTTP 401)
├── DependencyUnavailableError  LiveKit, Redis or a provider did not answer (retryable)
├── DevStackError               a child of `voice-agent dev` failed to start or crashed
└── ProviderError               a model provider call (STT, LLM, TTS) failed; `retryable` per error
    ├── ProviderTimeoutError    no answer in time (retryable; also a DependencyUnavailableError)
    ├── ProviderConnectionError the provider could not be reached (retryable; also a
    │                           DependencyUnavailableError)
    └── ProviderResponseError   the provider answered with an error; `status` is the HTTP status
                                when there was one; retryable for 408, 409, 429 and 5xx
"""

from __future__ import annotations


class VoiceAgentError(Exception):
    """Base of every error this package raises on purpose."""

    retryable: bool = False


class ConfigError(VoiceAgentError):
    """A setting is missing or invalid; the message says which and how to fix it."""


class AuthError(VoiceAgentError):
    """The caller's credentials were missing or invalid; the message is safe to return."""


class DependencyUnavailableError(VoiceAgentError):
    """A service this process depends on did not answer in time."""

    retryable = True


class DevStackError(VoiceAgentError):
    """A component of the development stack failed to start or stopped unexpectedly."""


class ProviderError(VoiceAgentError):
    """A model provider call failed; `provider` names the capability, e.g. "openai.llm".

    Messages are for logs and operators, not for the user or the model.
    """

    def __init__(self, message: str, *, provider: str, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable


class ProviderTimeoutError(ProviderError, DependencyUnavailableError):
    """The provider did not answer (or went silent mid-stream) within the timeout."""

    retryable = True


class ProviderConnectionError(ProviderError, DependencyUnavailableError):
    """The provider could not be reached, or the connection broke mid-stream."""

    retryable = True


class ProviderResponseError(ProviderError):
    """The provider answered with an error; `status` is its HTTP status when there was one."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        if retryable is None:
            retryable = status is not None and (status in {408, 409, 429} or status >= 500)
        super().__init__(message, provider=provider, retryable=retryable)
        self.status = status
