"""Honest fakes of STT, LLM and TTS for unit tests, driven by a scripted timeline.

Each fake answers its calls in order from a list of scripted results; a `FakeTimeline` on a result
says how it unfolds: a delay before the first piece, a delay between pieces, a stall after some
pieces (until an `asyncio.Event` is set, or until cancelled), and an error raised after some
pieces. Every call is recorded with what it was asked and how it ended (completed, failed,
cancelled, or closed early by its consumer), so tests can assert on barge-in and retries. A
streaming call is recorded when its first piece is asked for: that is when a real provider sends
its request.

The fakes keep the contracts of the real providers: the same capabilities as data, pieces yielded
as they are "produced", whole-sample PCM at the declared rate, and `RuntimeError` when used after
`aclose()`. A fake whose script has run out raises `ScriptExhaustedError` unless it was given a
`default`; `FakeTTS` defaults to speaking any text as a tone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ProviderError
from voice_agent.providers.base import (
    LLM,
    SAMPLE_WIDTH,
    STT,
    TTS,
    LLMCapabilities,
    LLMDelta,
    PcmAudio,
    STTCapabilities,
    Transcript,
    TranscriptEvent,
    TTSCapabilities,
    Usage,
)
from voice_agent.testing.openai_script import split_words
from voice_agent.testing.tone import speech_duration_s, tone


class ScriptExhaustedError(AssertionError):
    """A fake was called more often than its script foresaw: the test, not the code, is wrong."""


@dataclass(frozen=True)
class FakeTimeline:
    """How one scripted result unfolds, piece by piece."""

    first_delay_s: float = 0.0  # before the first piece
    chunk_delay_s: float = 0.0  # before each later piece
    stall_after: int | None = None  # after this many pieces, wait for `resume` (or cancellation)
    resume: asyncio.Event | None = None
    error: ProviderError | None = None  # raised instead of piece number `fail_after`
    fail_after: int = 0


class CallOutcome(StrEnum):
    """How a recorded call ended."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its task was cancelled
    CLOSED = "closed"  # its consumer stopped iterating early


@dataclass(frozen=True)
class FakeTranscription:
    """A scripted transcript; `interim` texts stream before it when the fake streams."""

    text: str
    language: str | None = None  # None: the language asked for
    interim: Sequence[str] = ()
    confidence: float | None = None  # the STT's score of the words (None: it gives none)
    timeline: FakeTimeline = field(default_factory=FakeTimeline)


@dataclass(frozen=True)
class FakeCompletion:
    """A scripted completion: text pieces (a str is split into words), then the closing delta."""

    text: str | Sequence[str] = ""
    tool_calls: Sequence[ToolCall] = ()
    usage: Usage | None = None  # None: counted from the words in and out
    finish_reason: str | None = None  # None: "tool_calls" when there are calls, else "stop"
    timeline: FakeTimeline = field(default_factory=FakeTimeline)


@dataclass(frozen=True)
class FakeSpeech:
    """Scripted speech: a tone as long as the text takes to say, or `duration_s`."""

    duration_s: float | None = None
    chunk_ms: int = 20
    frequency_hz: float = 440.0
    timeline: FakeTimeline = field(default_factory=FakeTimeline)


@dataclass
class STTCall:
    """What `FakeSTT` was asked, and how it ended."""

    audio: PcmAudio
    language: str | None
    streamed: bool
    outcome: CallOutcome = CallOutcome.PENDING


@dataclass
class LLMCall:
    """What `FakeLLM` was asked, and how it ended."""

    messages: list[ChatMessage]
    tools: list[dict[str, Any]] | None
    outcome: CallOutcome = CallOutcome.PENDING
    yielded: int = 0


@dataclass
class TTSCall:
    """What `FakeTTS` was asked, and how it ended."""

    text: str
    outcome: CallOutcome = CallOutcome.PENDING
    yielded: int = 0


class _Pacer:
    """Walks a `FakeTimeline`: call `next_piece()` before producing each piece."""

    def __init__(self, timeline: FakeTimeline) -> None:
        self._timeline = timeline
        self._sent = 0

    async def next_piece(self) -> None:
        t = self._timeline
        if t.error is not None and self._sent == t.fail_after:
            raise t.error
        if self._sent == t.stall_after:
            await (t.resume or asyncio.Event()).wait()  # a fresh event: until cancelled
        await asyncio.sleep(t.first_delay_s if self._sent == 0 else t.chunk_delay_s)
        self._sent += 1


T = TypeVar("T")


class _Script(Generic[T]):
    def __init__(self, owner: str, results: Iterable[T], default: T | None) -> None:
        self._owner = owner
        self._results = deque(results)
        self._default = default
        self._calls = 0

    def next(self) -> T:
        self._calls += 1
        if self._results:
            return self._results.popleft()
        if self._default is not None:
            return self._default
        raise ScriptExhaustedError(f"{self._owner} has no scripted result for call {self._calls}")


class _Closable:
    """Refuses work after `aclose()`, as a provider whose connections are gone would."""

    closed = False

    async def aclose(self) -> None:
        """Refuse further calls."""
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} used after aclose()")


def _outcome_of(error: BaseException) -> CallOutcome:
    if isinstance(error, asyncio.CancelledError):
        return CallOutcome.CANCELLED
    if isinstance(error, GeneratorExit):
        return CallOutcome.CLOSED
    return CallOutcome.FAILED


class FakeSTT(_Closable, STT):
    """Transcribes from a script; records every segment it was given."""

    def __init__(
        self,
        results: Iterable[FakeTranscription] = (),
        *,
        default: FakeTranscription | None = None,
        streaming: bool = True,
    ) -> None:
        self.capabilities = STTCapabilities(streaming=streaming, interim_results=streaming)
        self.calls: list[STTCall] = []
        self._script = _Script("FakeSTT", results, default)

    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """The next scripted transcript, after its first delay."""
        self._check_open()
        call = STTCall(audio=audio, language=language, streamed=False)
        self.calls.append(call)
        result = self._script.next()
        try:
            await _Pacer(result.timeline).next_piece()
        except BaseException as e:
            call.outcome = _outcome_of(e)
            raise
        call.outcome = CallOutcome.COMPLETED
        return _transcript(result, audio, language)

    async def transcribe_stream(
        self, audio: PcmAudio, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """The scripted interim texts (when streaming), then the final transcript."""
        self._check_open()
        call = STTCall(audio=audio, language=language, streamed=True)
        self.calls.append(call)
        result = self._script.next()
        pacer = _Pacer(result.timeline)
        try:
            if self.capabilities.interim_results:
                for text in result.interim:
                    await pacer.next_piece()
                    yield TranscriptEvent.interim(text)
            await pacer.next_piece()
            yield TranscriptEvent.final(_transcript(result, audio, language))
        except BaseException as e:
            call.outcome = _outcome_of(e)
            raise
        call.outcome = CallOutcome.COMPLETED


def _transcript(result: FakeTranscription, audio: PcmAudio, language: str | None) -> Transcript:
    return Transcript(
        text=result.text,
        language=result.language or language,
        duration_s=audio.duration_s,
        confidence=result.confidence,
    )


class FakeLLM(_Closable, LLM):
    """Streams scripted completions; records the messages and tools of every call."""

    def __init__(
        self,
        results: Iterable[FakeCompletion] = (),
        *,
        default: FakeCompletion | None = None,
        tool_calls: bool = True,
    ) -> None:
        self.capabilities = LLMCapabilities(tool_calls=tool_calls)
        self.calls: list[LLMCall] = []
        self._script = _Script("FakeLLM", results, default)

    async def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        """Scripted text pieces, then one delta with the tool calls, usage and finish reason."""
        self._check_open()
        if tools and not self.capabilities.tool_calls:
            raise ValueError("this FakeLLM was declared without tool calls")
        call = LLMCall(messages=list(messages), tools=tools)
        self.calls.append(call)
        result = self._script.next()
        pacer = _Pacer(result.timeline)
        tokens = split_words(result.text) if isinstance(result.text, str) else list(result.text)
        try:
            for token in tokens:
                await pacer.next_piece()
                call.yielded += 1
                yield LLMDelta(text=token)
            await pacer.next_piece()
            call.yielded += 1
            yield LLMDelta(
                tool_calls=tuple(result.tool_calls),
                usage=result.usage or _count_usage(messages, tokens),
                finish_reason=result.finish_reason
                or ("tool_calls" if result.tool_calls else "stop"),
            )
        except BaseException as e:
            call.outcome = _outcome_of(e)
            raise
        call.outcome = CallOutcome.COMPLETED


def _count_usage(messages: Sequence[ChatMessage], tokens: Sequence[str]) -> Usage:
    prompt = sum(len((m.content or "").split()) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=len(tokens))


class FakeTTS(_Closable, TTS):
    """Speaks any text as a tone, paced by the script; records every text it was given."""

    def __init__(
        self,
        results: Iterable[FakeSpeech] = (),
        *,
        default: FakeSpeech | None = None,
        sample_rate: int = 24_000,
    ) -> None:
        self.capabilities = TTSCapabilities(streaming=True, sample_rate=sample_rate)
        self.calls: list[TTSCall] = []
        self._script = _Script("FakeTTS", results, default or FakeSpeech())

    async def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """The tone for `text` in `chunk_ms` pieces at the declared sample rate."""
        self._check_open()
        call = TTSCall(text=text)
        self.calls.append(call)
        result = self._script.next()
        rate = self.capabilities.sample_rate
        duration_s = result.duration_s if result.duration_s is not None else speech_duration_s(text)
        pcm = tone(duration_s, sample_rate=rate, frequency_hz=result.frequency_hz)
        step = max(1, rate * result.chunk_ms // 1000) * SAMPLE_WIDTH
        pacer = _Pacer(result.timeline)
        try:
            for start in range(0, len(pcm), step):
                await pacer.next_piece()
                call.yielded += 1
                yield PcmAudio(data=pcm[start : start + step], sample_rate=rate)
        except BaseException as e:
            call.outcome = _outcome_of(e)
            raise
        call.outcome = CallOutcome.COMPLETED
