"""Provider interface types: PCM audio, chat messages, transcript events, errors."""

from __future__ import annotations

import io
import wave

import pytest

from voice_agent.chat import ChatMessage, Role, ToolCall
from voice_agent.exceptions import (
    DependencyUnavailableError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
)
from voice_agent.providers.base import PcmAudio, Transcript, TranscriptEvent


def test_pcm_audio_refuses_half_samples() -> None:
    """16-bit PCM with an odd number of bytes is refused."""
    with pytest.raises(ValueError, match="even"):
        PcmAudio(data=b"\x00\x00\x00", sample_rate=16_000)


def test_pcm_audio_knows_its_duration() -> None:
    """Duration is samples over sample rate."""
    assert PcmAudio(data=bytes(48_000), sample_rate=24_000).duration_s == 1.0


def test_pcm_audio_to_wav_keeps_samples_and_rate() -> None:
    """The WAV form is mono 16-bit at the same rate with the same samples."""
    audio = PcmAudio(data=bytes(range(200)), sample_rate=8_000)
    with wave.open(io.BytesIO(audio.to_wav()), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8_000)
        assert wav.readframes(wav.getnframes()) == audio.data


def test_tool_message_needs_a_call_id() -> None:
    """A tool message without a tool_call_id is refused."""
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatMessage(role=Role.TOOL, content="42")


def test_only_assistant_messages_carry_tool_calls() -> None:
    """Tool calls on a user message are refused."""
    with pytest.raises(ValueError, match="assistant"):
        ChatMessage(role=Role.USER, content="x", tool_calls=(ToolCall("c", "f", "{}"),))


def test_transcript_events_are_interim_until_final() -> None:
    """Interim events carry no transcript; the final one carries it and its text."""
    transcript = Transcript(text="yes", language="en", duration_s=0.4)
    assert not TranscriptEvent.interim("ye").is_final
    final = TranscriptEvent.final(transcript)
    assert (final.is_final, final.text, final.transcript) == (True, "yes", transcript)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (404, False), (408, True), (409, True), (429, True), (500, True)],
)
def test_response_error_is_retryable_for_transient_statuses(status: int, retryable: bool) -> None:
    """408, 409, 429 and 5xx may succeed on a retry; other statuses will not."""
    assert ProviderResponseError("x", provider="p", status=status).retryable is retryable


def test_timeouts_and_connection_errors_are_retryable_unavailability() -> None:
    """Timeouts and connection errors are retryable provider errors and dependency outages."""
    for error in (
        ProviderTimeoutError("x", provider="p"),
        ProviderConnectionError("x", provider="p"),
    ):
        assert isinstance(error, ProviderError)
        assert isinstance(error, DependencyUnavailableError)
        assert error.retryable


def test_provider_error_retryable_can_be_set_per_error() -> None:
    """A ProviderError takes its retryable flag per instance, defaulting to not retryable."""
    assert not ProviderError("x", provider="p").retryable
    assert ProviderError("x", provider="p", retryable=True).retryable
