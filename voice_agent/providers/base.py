"""What the pipeline asks of a model provider: small interfaces, capabilities declared as data.

Audio crosses these interfaces as 16-bit little-endian mono PCM with its sample rate
(`PcmAudio`). Streaming methods are async generators: a caller that stops early (barge-in)
closes them with `contextlib.aclosing(...)` so the connection behind them is released at once.

Timing is measured by the caller: every streaming method yields each piece the moment it
arrives (nothing is buffered beyond an odd trailing byte of PCM), and its request starts on the
first `__anext__`, so "time to first token / first byte" is the time from that first call to the
first item. Fakes and real providers behave the same way, so the pipeline's `TurnMetrics` can
measure both alike.
"""

from __future__ import annotations

import io
import wave
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any

from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.closing import AsyncClosing
from voice_agent.exceptions import ProviderError

SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM throughout


@dataclass(frozen=True, slots=True)
class PcmAudio:
    """16-bit little-endian mono PCM and its sample rate."""

    data: bytes
    sample_rate: int

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate}")
        if len(self.data) % SAMPLE_WIDTH:
            raise ValueError("16-bit PCM needs an even number of bytes")

    @property
    def sample_count(self) -> int:
        """How many samples the audio holds."""
        return len(self.data) // SAMPLE_WIDTH

    @property
    def duration_s(self) -> float:
        """How long the audio plays, in seconds."""
        return self.sample_count / self.sample_rate

    def to_wav(self) -> bytes:
        """The audio as a WAV file, for APIs that take files."""
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(SAMPLE_WIDTH)
            wav.setframerate(self.sample_rate)
            wav.writeframes(self.data)
        return buffer.getvalue()


class Provider(AsyncClosing):
    """A provider may hold connections: close it with `aclose()` or use `async with`."""

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""


# Speech to text


@dataclass(frozen=True, slots=True)
class STTCapabilities:
    """`streaming`: `transcribe_stream` yields text while a segment is still being transcribed.
    `interim_results`: some of those events are interim (not yet final) text."""

    streaming: bool
    interim_results: bool


@dataclass(frozen=True, slots=True)
class Transcript:
    """The text of one speech segment."""

    text: str
    language: str | None
    duration_s: float  # of the audio transcribed
    confidence: float | None = None
    """How sure the STT is of the words, 0-1 (the geometric mean of their tokens' probabilities);
    None when the provider does not say. Low on speech it had to guess at, such as a sentence
    cut off mid-word."""


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """Interim text while a segment is transcribed, then one final event with the transcript."""

    text: str  # everything recognised so far, not only what is new
    transcript: Transcript | None = None  # set on the final event only

    @property
    def is_final(self) -> bool:
        """Whether this is the segment's final transcript."""
        return self.transcript is not None

    @classmethod
    def interim(cls, text: str) -> TranscriptEvent:
        """Text recognised so far; more will follow."""
        return cls(text=text)

    @classmethod
    def final(cls, transcript: Transcript) -> TranscriptEvent:
        """The segment's final transcript."""
        return cls(text=transcript.text, transcript=transcript)


async def final_transcript(
    events: AsyncIterable[TranscriptEvent], *, provider: str, missing: str
) -> Transcript:
    """The final transcript of a stream of events; a `ProviderError` saying `missing` when the
    stream ends without one (wrappers that work on streams answer `transcribe` with this)."""
    async for event in events:
        if event.transcript is not None:
            return event.transcript
    raise ProviderError(missing, provider=provider)


class STT(Provider, ABC):
    """Speech to text, one VAD segment at a time."""

    capabilities: STTCapabilities

    @abstractmethod
    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """Transcribe one segment; `language` is an ISO-639-1 hint."""

    async def transcribe_stream(
        self, audio: PcmAudio, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Interim events while transcribing (when `capabilities.streaming`), then a final one."""
        yield TranscriptEvent.final(await self.transcribe(audio, language=language))


# Language model


@dataclass(frozen=True, slots=True)
class LLMCapabilities:
    """`tool_calls`: the model can be given tools and call them."""

    tool_calls: bool


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a completion consumed."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class LLMDelta:
    """A piece of a streamed completion: text, completed tool calls, or the closing usage."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None  # "stop", "length", "tool_calls", ... on the last piece


class LLM(Provider, ABC):
    """A chat model that streams its answer."""

    capabilities: LLMCapabilities

    @abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        """Stream the answer to `messages`; `tools` are OpenAI-format function definitions."""


# Text to speech


@dataclass(frozen=True, slots=True)
class TTSCapabilities:
    """`streaming`: audio arrives in chunks while synthesis runs, not all at the end.
    `sample_rate`: the rate of every chunk `synthesize` yields."""

    streaming: bool
    sample_rate: int


class TTS(Provider, ABC):
    """Speech from text, one sentence or phrase at a time."""

    capabilities: TTSCapabilities

    @abstractmethod
    def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """Stream speech for `text` as PCM chunks at `capabilities.sample_rate`."""
