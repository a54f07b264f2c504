"""The error tree.

VoiceAgentError                 base; `retryable` says whether trying again may help
├── ConfigError                 a setting is missing or wrong; found at start-up
├── AuthError                   the caller could not be authenticated (HTTP 401)
├── DependencyUnavailableError  LiveKit, Redis or a provider did not answer (retryable)
└── DevStackError               a child of `voice-agent dev` failed to start or crashed
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
