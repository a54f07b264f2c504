"""Fallback chains: a primary provider, and a secondary that takes over when the primary fails.

The switch happens only while it is safe: before the primary has produced anything for this
request (a first token, a first audio chunk, a transcript). A primary that says nothing within
`switch_after_s` counts as failed too. Every switch is a structured log event and a Prometheus
count, so operators see a degraded provider before callers notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter

from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderError
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

log = get_logger("providers.fallback")

FALLBACKS = Counter(
    "voice_agent_provider_fallbacks_total",
    "Requests the secondary provider served because the primary failed.",
    ["stage"],
    registry=WORKER_REGISTRY,
)

T = TypeVar("T")


async def _first_or_switch(
    primary: Callable[[], AsyncGenerator[T, None]],
    secondary: Callable[[], AsyncGenerator[T, None]],
    *,
    stage: str,
    switch_after_s: float,
) -> AsyncGenerator[T, None]:
    """Stream from `primary`; from `secondary` if it fails or stays silent before its first item."""
    stream = primary()
    try:
        async with asyncio.timeout(switch_after_s):
            first = await anext(stream)
    except StopAsyncIteration:
        await stream.aclose()
        return
    except (ProviderError, TimeoutError) as e:
        await stream.aclose()
        FALLBACKS.labels(stage=stage).inc()
        log.warning("provider.fallback", stage=stage, error=str(e) or type(e).__name__)
        backup = secondary()
        async with contextlib.aclosing(backup):
            async for item in backup:
                yield item
        return
    async with contextlib.aclosing(stream):
        yield first
        async for item in stream:
            yield item


class _Chain(Provider):
    def __init__(self, primary: Provider, secondary: Provider, switch_after_s: float) -> None:
        self._primary = primary
        self._secondary = secondary
        self._switch_after_s = switch_after_s

    async def aclose(self) -> None:
        await self._primary.aclose()
        await self._secondary.aclose()


class FallbackSTT(_Chain, STT):
    """Speech to text from `primary`, else `secondary`."""

    def __init__(self, primary: STT, secondary: STT, *, switch_after_s: float) -> None:
        super().__init__(primary, secondary, switch_after_s)
        self._stt_primary, self._stt_secondary = primary, secondary
        self.capabilities = primary.capabilities

    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """The primary's transcript, or the secondary's when the primary fails."""
        return await final_transcript(
            self.transcribe_stream(audio, language=language),
            provider="fallback.stt",
            missing="no transcript from either provider",
        )

    def transcribe_stream(
        self, audio: PcmAudio, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Events from the primary, or from the secondary when the primary fails first."""
        return _first_or_switch(
            lambda: self._stt_primary.transcribe_stream(audio, language=language),
            lambda: self._stt_secondary.transcribe_stream(audio, language=language),
            stage="stt",
            switch_after_s=self._switch_after_s,
        )


class FallbackLLM(_Chain, LLM):
    """Completions from `primary`, else `secondary`."""

    def __init__(self, primary: LLM, secondary: LLM, *, switch_after_s: float) -> None:
        super().__init__(primary, secondary, switch_after_s)
        self._llm_primary, self._llm_secondary = primary, secondary
        self.capabilities = primary.capabilities

    def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        """The primary's stream, or the secondary's if the primary fails before its first delta."""
        return _first_or_switch(
            lambda: self._llm_primary.stream(messages, tools=tools),
            lambda: self._llm_secondary.stream(messages, tools=tools),
            stage="llm",
            switch_after_s=self._switch_after_s,
        )


class FallbackTTS(_Chain, TTS):
    """Speech from `primary`, else `secondary` (chunks carry their own sample rate)."""

    def __init__(self, primary: TTS, secondary: TTS, *, switch_after_s: float) -> None:
        super().__init__(primary, secondary, switch_after_s)
        self._tts_primary, self._tts_secondary = primary, secondary
        self.capabilities = primary.capabilities

    def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """The primary's audio, or the secondary's when the primary fails before its first chunk."""
        return _first_or_switch(
            lambda: self._tts_primary.synthesize(text),
            lambda: self._tts_secondary.synthesize(text),
            stage="tts",
            switch_after_s=self._switch_after_s,
        )
