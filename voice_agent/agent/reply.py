"""One agent turn: LLM tokens → speakable chunks → TTS → the room, overlapped and cancellable.

The LLM streams text; the sentence chunker hands each finished sentence or clause to TTS at once,
so the first audio plays while the model is still writing the rest. Audio is tagged with its
chunk's index, so after a barge-in the speaker's playout accounting tells which words were heard.
A provider failure is retried once when nothing of that stage has come out yet (a retry then is
safe); otherwise `ReplyFailedError` names the stage and the session says its fallback line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.exceptions import ProviderError, VoiceAgentError
from voice_agent.pipeline.chunker import SentenceChunker
from voice_agent.providers.base import LLM, TTS, ChatMessage, Role, ToolCall

T = TypeVar("T")

_END = object()


class ReplyFailedError(VoiceAgentError):
    """A stage of the reply failed even after its retry; `stage` is "llm" or "tts"."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause}")
        self.stage = stage


def to_chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """OpenAI-format dicts (as the conversation context keeps them) as provider messages."""
    out = []
    for m in messages:
        calls = tuple(
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
            for c in m.get("tool_calls") or ()
        )
        out.append(
            ChatMessage(
                role=Role(m["role"]),
                content=m.get("content"),
                tool_calls=calls,
                tool_call_id=m.get("tool_call_id"),
            )
        )
    return out


async def _next_within(iterator: AsyncIterator[T], timeout_s: float) -> T | None:
    """The iterator's next item, None when exhausted; a provider that goes silent times out."""
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(iterator)
    except StopAsyncIteration:
        return None


@dataclass
class ReplyOutcome:
    """What a finished (or cut short) reply produced and what the listener heard of it."""

    text: str
    heard: str


@dataclass
class AgentReply:
    """Speaks one reply, from a model prompt or from fixed text."""

    speaker: AgentSpeaker
    tts: TTS
    timer: TurnTimer
    provider_timeout_s: float
    llm: LLM | None = None
    messages: Sequence[ChatMessage] = ()
    fixed_text: str | None = None
    on_first_audio: Callable[[float], None] | None = None
    on_chunk: Callable[[str], None] | None = None
    chunks: list[str] = field(default_factory=list)
    _audio_s: dict[int, float] = field(default_factory=dict)

    async def run(self) -> ReplyOutcome:
        """Generate and speak the whole reply; raises `ReplyFailedError` when a stage fails."""
        queue: asyncio.Queue[str | object] = asyncio.Queue()
        self.speaker.begin_reply(self._first_audio)
        try:
            async with asyncio.TaskGroup() as group:
                if self.fixed_text is not None:
                    queue.put_nowait(self.fixed_text)
                    queue.put_nowait(_END)
                else:
                    group.create_task(self._write(queue))
                group.create_task(self._speak(queue))
        except BaseExceptionGroup as group_error:
            failed = [e for e in group_error.exceptions if isinstance(e, ReplyFailedError)]
            if failed:
                raise failed[0] from None
            raise
        await self.speaker.wait_idle()
        text = " ".join(self.chunks)
        return ReplyOutcome(text=text, heard=text)

    def heard_text(self) -> str:
        """The words the listener heard so far (call after the speaker stopped or paused)."""
        heard = []
        for i, chunk in enumerate(self.chunks):
            total = self._audio_s.get(i, 0.0)
            played = self.speaker.played_seconds(i)
            if total <= 0 or played <= 0:
                break
            if played >= total - 0.03:
                heard.append(chunk)
                continue
            words = chunk.split()
            heard.append(" ".join(words[: int(len(words) * played / total)]))
            break
        return " ".join(h for h in heard if h)

    def _first_audio(self, at: float) -> None:
        self.timer.first_audio = at
        if self.on_first_audio is not None:
            self.on_first_audio(at)

    async def _write(self, queue: asyncio.Queue[str | object]) -> None:
        assert self.llm is not None
        chunker = SentenceChunker()
        for attempt in (1, 2):
            produced = False
            self.timer.llm_started = time.monotonic()
            try:
                stream = self.llm.stream(self.messages)
                async with contextlib.aclosing(stream):
                    while (
                        delta := await _next_within(stream, self.provider_timeout_s)
                    ) is not None:
                        text = delta.text
                        if not text:
                            continue
                        if not produced:
                            self.timer.llm_first_token = time.monotonic()
                            produced = True
                        for chunk in chunker.push(text):
                            queue.put_nowait(chunk)
                break
            except (ProviderError, TimeoutError) as e:
                retryable = isinstance(e, TimeoutError) or e.retryable
                if produced or attempt == 2 or not retryable:
                    queue.put_nowait(_END)
                    raise ReplyFailedError("llm", e) from e
        if rest := chunker.flush():
            queue.put_nowait(rest)
        queue.put_nowait(_END)

    async def _speak(self, queue: asyncio.Queue[str | object]) -> None:
        while (chunk := await queue.get()) is not _END:
            assert isinstance(chunk, str)
            index = len(self.chunks)
            self.chunks.append(chunk)
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            await self._synthesize(chunk, index)

    async def _synthesize(self, text: str, index: int) -> None:
        for attempt in (1, 2):
            samples = 0
            rate = self.tts.capabilities.sample_rate
            started = time.monotonic()
            if self.timer.tts_started is None:
                self.timer.tts_started = started
            try:
                stream = self.tts.synthesize(text)
                async with contextlib.aclosing(stream):
                    while (
                        audio := await _next_within(stream, self.provider_timeout_s)
                    ) is not None:
                        if samples == 0 and self.timer.tts_first_byte is None:
                            self.timer.tts_first_byte = time.monotonic()
                        samples += audio.sample_count
                        rate = audio.sample_rate
                        self.speaker.push(audio.data, sample_rate=rate, segment=index)
                self.speaker.end_segment(index)
                self._audio_s[index] = samples / rate
                return
            except (ProviderError, TimeoutError) as e:
                retryable = isinstance(e, TimeoutError) or e.retryable
                if samples or attempt == 2 or not retryable:
                    raise ReplyFailedError("tts", e) from e
