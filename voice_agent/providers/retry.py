"""One retry rule for every stage: try once more, unless output has started.

A request that fails before it has produced anything is safe to repeat: nothing was said, shown
or spoken. Once a stage has produced output (a transcript event with text, a token or tool call,
a sound), a repeat would say it twice, so the failure goes to the caller instead. A failure is
retryable when it is a timeout or a `ProviderError` whose `retryable` flag says so; a stream
that stays silent for `silence_timeout_s` (before its first item or between two) is a
`ProviderTimeoutError`. Every failure leaves the wrapper as a `ProviderError`.

The factory wraps each stage once, outside its fallback chain (`Retrying*(Fallback*(...))`), so
STT, LLM and TTS retry by the same rule and a retry may again reach the secondary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter

from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderError, ProviderTimeoutError
from voice_agent.logging import get_logger
from voice_agent.metrics import WORKER_REGISTRY
from voice_agent.providers.base import (
    LLM,
    STT,
    TTS,
    LLMDelta,
    PcmAudio,
    Provider,
    Transcript,
    TranscriptEvent,
    final_transcript,
)

log = get_logger("providers.retry")

ATTEMPTS = 2  # the first try and one retry

RETRIES = Counter(
    "voice_agent_provider_retries_total",
    "Provider requests tried again after a retryable failure before any output.",
    ["stage"],
    registry=WORKER_REGISTRY,
)

T = TypeVar("T")


def is_retryable(error: BaseException) -> bool:
    """Whether trying again may help: a timeout, or a provider error flagged retryable."""
    return isinstance(error, TimeoutError) or (isinstance(error, ProviderError) and error.retryable)


async def retry_stream(
    start: Callable[[], AsyncGenerator[T, None]],
    *,
    stage: str,
    silence_timeout_s: float,
    is_output: Callable[[T], bool],
) -> AsyncGenerator[T, None]:
    """Items of `start()`'s stream; started again once when it fails before any output."""
    for attempt in range(1, ATTEMPTS + 1):
        produced = False
        try:
            async with contextlib.aclosing(start()) as stream:
                while True:
                    try:
                        async with asyncio.timeout(silence_timeout_s):
                            item = await anext(stream)
                    except StopAsyncIteration:
                        return
                    produced = produced or is_output(item)
                    yield item
        except (ProviderError, TimeoutError) as e:
            retry = not produced and attempt < ATTEMPTS and is_retryable(e)
            log.warning(
                "provider.failed",
                stage=stage,
                attempt=attempt,
                error=str(e) or type(e).__name__,
                retryable=is_retryable(e),
                retrying=retry,
            )
            if not retry:
                if isinstance(e, ProviderError):
                    raise
                raise ProviderTimeoutError(
                    f"{stage}: no output for {silence_timeout_s:g} s", provider=stage
                ) from e
            RETRIES.labels(stage=stage).inc()


class _Retrying(Provider):
    def __init__(self, inner: Provider, silence_timeout_s: float) -> None:
        self._inner = inner
        self._silence_timeout_s = silence_timeout_s

    async def aclose(self) -> None:
        await self._inner.aclose()


class RetryingSTT(_Retrying, STT):
    """Speech to text from `inner`, by the retry rule."""

    def __init__(self, inner: STT, *, silence_timeout_s: float) -> None:
        super().__init__(inner, silence_timeout_s)
        self._stt = inner
        self.capabilities = inner.capabilities

    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """The segment's transcript."""
        return await final_transcript(
            self.transcribe_stream(audio, language=language),
            provider="stt",
            missing="the stream ended without a transcript",
        )

    def transcribe_stream(
        self, audio: PcmAudio, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Interim events, then the final one."""
        return retry_stream(
            lambda: self._stt.transcribe_stream(audio, language=language),
            stage="stt",
            silence_timeout_s=self._silence_timeout_s,
            is_output=lambda event: bool(event.text) or event.is_final,
        )


class RetryingLLM(_Retrying, LLM):
    """Completions from `inner`, by the retry rule."""

    def __init__(self, inner: LLM, *, silence_timeout_s: float) -> None:
        super().__init__(inner, silence_timeout_s)
        self._llm = inner
        self.capabilities = inner.capabilities

    def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        """The completion's deltas."""
        return retry_stream(
            lambda: self._llm.stream(messages, tools=tools),
            stage="llm",
            silence_timeout_s=self._silence_timeout_s,
            is_output=lambda delta: bool(delta.text or delta.tool_calls),
        )


class RetryingTTS(_Retrying, TTS):
    """Speech from `inner`, by the retry rule."""

    def __init__(self, inner: TTS, *, silence_timeout_s: float) -> None:
        super().__init__(inner, silence_timeout_s)
        self._tts = inner
        self.capabilities = inner.capabilities

    def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """The speech, chunk by chunk."""
        return retry_stream(
            lambda: self._tts.synthesize(text),
            stage="tts",
            silence_timeout_s=self._silence_timeout_s,
            is_output=lambda audio: audio.sample_count > 0,
        )
