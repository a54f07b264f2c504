"""The error tree.

VoiceAgentError                 base; `retryable` says whether trying again may help
├── ConfigError                 a setting is missing or wrong; found at start-up
├── AuthError                   the caller could not be authenticated (HTTP 401)
├── DependencyUnavailableError  LiveKit, Redis or a provider did not answer (retryable)
├── DevStackError               a child of `voice-agent dev` failed to start or crashed
├── TurnModelError              the end-of-turn model's weights are missing, fail their checksum
│                               or do not load
├── ToolError                   a developer-registered tool (voice_agent.tooling)
│   ├── ToolDefinitionError     a @tool function is malformed; found when its module is imported
│   ├── ToolLoadError           a tools module failed to import, two tools share a name, or an
│   │                           MCP server could not be started and listed
│   ├── ToolArgumentsError      the model's arguments failed validation; message fit for the model
│   ├── ToolReportedError       raised by a tool: the request cannot be done; message for the model
│   └── ToolSourceError         an MCP server was unreachable, died mid-call or answered a protocol
│                               error (a tool failure; counts towards the tool's breaker)
├── PostCallError               the post-call pipeline (voice_agent.postcall)
│   ├── IntegrationError        a post-call side effect failed; the job retries it (retryable)
│   ├── UnknownCallError        a store write named a call the store lacks (also LookupError)
│   └── InvalidCursorError      a pagination cursor the store did not hand out (also ValueError)
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


class TurnModelError(VoiceAgentError):
    """The end-of-turn model cannot be used: no weights, a wrong checksum, or a bad file."""


class ToolError(VoiceAgentError):
    """A problem with a developer-registered tool."""


class ToolDefinitionError(ToolError):
    """A @tool function cannot be turned into a tool; the message says what to change."""


class ToolLoadError(ToolError):
    """A tools module failed to import, tools clash, or an MCP server cannot be listed; the
    message names the file or the server."""


class ToolArgumentsError(ToolError):
    """The arguments the model sent failed validation; the message is written for the model."""


class ToolReportedError(ToolError):
    """Raised by a tool when a request cannot be done (not a fault of the tool's system).

    The message is shown to the model, so write it for the user's ears and keep secrets out of
    it. It does not count towards the tool's circuit breaker.
    """


class ToolSourceError(ToolError):
    """An MCP server could not serve a call: not connected, gone mid-call, or a protocol error.

    The message is for logs and the audit, not for the model (it is told only that the request
    failed).
    """


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


class PostCallError(VoiceAgentError):
    """A failure in the post-call pipeline."""


class IntegrationError(PostCallError):
    """A post-call side effect failed; the job retries it with backoff."""

    retryable = True


class UnknownCallError(PostCallError, LookupError):
    """A write named a call the store does not hold."""


class InvalidCursorError(PostCallError, ValueError):
    """A pagination cursor that this store did not hand out."""
