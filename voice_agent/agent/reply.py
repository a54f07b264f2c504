"""One agent turn: LLM tokens → speakable chunks → TTS → the room, overlapped and cancellable.

The LLM streams text; the sentence chunker hands each finished sentence or clause to TTS at once,
so the first audio plays while the model is still writing the rest. Audio is tagged with its
chunk's index, so after a barge-in the speaker's playout accounting tells which words were heard.
The providers retry by their own rule (`providers/retry.py`); a failure that reaches the reply
raises `ReplyFailedError` naming the stage, and the session says its fallback line.

With tools, a reply runs in rounds: the model streams text and tool calls; a round whose stream
finished is committed (its text and calls join the conversation), its calls run through the
guarded `ReplyTools`, and the model goes on with their results. Tool calls of a round cut short by
a barge-in are never run (`ReplyTools.skip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ProviderError, VoiceAgentError
from voice_agent.pipeline.chunker import SentenceChunker
from voice_agent.protocol import Stage
from voice_agent.providers.base import LLM, TTS, Usage

T = TypeVar("T")

_END = object()


class ReplyFailedError(VoiceAgentError):
    """A stage of the reply failed even after its retry; `stage` is "llm" or "tts"."""

    def __init__(self, stage: Stage, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause}")
        self.stage: Stage = stage


class ReplyTools(Protocol):
    """The guarded tools a reply may call (the call session's `CallTools`)."""

    def schemas(self) -> list[dict[str, Any]] | None:
        """OpenAI-format definitions of the tools the model may see now; None: no tools."""
        ...

    async def execute(
        self, calls: Sequence[ToolCall], *, say: Callable[[str], None], into: list[ChatMessage]
    ) -> str | None:
        """Run committed calls in order, appending one tool message per call to `into` (also
        when cancelled by a barge-in); a line to speak if the model says nothing after them."""
        ...

    def skip(self, calls: Sequence[ToolCall], reason: str) -> None:
        """Record calls that will never run (their generation was interrupted)."""
        ...


@dataclass
class ReplyUsage:
    """What one reply consumed."""

    llm_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Usage) -> None:
        """Count one completion's tokens."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens


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
    llm: LLM | None = None
    messages: Sequence[ChatMessage] = ()
    fixed_text: str | None = None
    on_first_audio: Callable[[float], None] | None = None
    on_chunk: Callable[[str], None] | None = None
    tools: ReplyTools | None = None
    max_tool_rounds: int = 4
    chunks: list[str] = field(default_factory=list)
    committed: list[ChatMessage] = field(default_factory=list)
    """Messages of finished rounds (assistant text with tool calls, tool results), in order."""
    usage: ReplyUsage = field(default_factory=ReplyUsage)
    _audio_s: dict[int, float] = field(default_factory=dict)
    _chunk_round: list[int] = field(default_factory=list)
    _round: int = 0

    async def run(self) -> ReplyOutcome:
        """Generate and speak the whole reply; raises `ReplyFailedError` when a stage fails."""
        queue: asyncio.Queue[tuple[int, str] | object] = asyncio.Queue()
        self.speaker.begin_reply(self._first_audio)
        try:
            async with asyncio.TaskGroup() as group:
                if self.fixed_text is not None:
                    queue.put_nowait((0, self.fixed_text))
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

    @property
    def tts_audio_s(self) -> float:
        """Seconds of speech synthesised for this reply."""
        return sum(self._audio_s.values())

    def heard_text(self, *, last_round_only: bool = False) -> str:
        """The words the listener heard so far (call after the speaker stopped or paused);
        with `last_round_only`, only of the round after the last committed tool calls."""
        heard = []
        for i, chunk in enumerate(self.chunks):
            if last_round_only and self._chunk_round[i] != self._round:
                continue
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

    async def _write(self, queue: asyncio.Queue[tuple[int, str] | object]) -> None:
        messages = list(self.messages)
        notice: str | None = None
        while True:
            offer = self.tools is not None and self._round < self.max_tool_rounds
            schemas = self.tools.schemas() if offer and self.tools is not None else None
            text, calls = await self._stream_round(messages, schemas, queue)
            if not calls or self.tools is None or schemas is None:
                if calls and self.tools is not None:  # called without being offered: never run
                    self.tools.skip(calls, "no tools were offered to this completion")
                break
            # The round's stream finished: its calls are committed and may run.
            assistant = ChatMessage.assistant(text, tool_calls=calls)
            self.committed.append(assistant)
            messages.append(assistant)
            started = time.monotonic()
            results: list[ChatMessage] = []
            try:
                notice = await self.tools.execute(calls, say=self._say_into(queue), into=results)
            finally:
                self.committed.extend(results)
                spent = time.monotonic() - started
                self.timer.tool_seconds = (self.timer.tool_seconds or 0.0) + spent
            messages.extend(results)
            self._round += 1
        if notice and not text:  # the model said nothing after the failed tool: say it ourselves
            queue.put_nowait((self._round, notice))
        queue.put_nowait(_END)

    def _say_into(self, queue: asyncio.Queue[tuple[int, str] | object]) -> Callable[[str], None]:
        def say(text: str) -> None:
            queue.put_nowait((self._round, text))

        return say

    async def _stream_round(
        self,
        messages: Sequence[ChatMessage],
        schemas: list[dict[str, Any]] | None,
        queue: asyncio.Queue[tuple[int, str] | object],
    ) -> tuple[str, tuple[ToolCall, ...]]:
        """One model completion spoken as it streams; its text and completed tool calls."""
        assert self.llm is not None
        chunker = SentenceChunker()
        calls: list[ToolCall] = []
        parts: list[str] = []
        if self._round == 0:  # time to first token counts from the turn's first request
            self.timer.llm_started = time.monotonic()
        try:
            self.usage.llm_requests += 1
            async with contextlib.aclosing(self.llm.stream(messages, tools=schemas)) as stream:
                async for delta in stream:
                    if delta.usage is not None:
                        self.usage.add(delta.usage)
                    text = delta.text
                    if not text and not delta.tool_calls:
                        continue
                    if self.timer.llm_first_token is None:
                        self.timer.llm_first_token = time.monotonic()
                    calls.extend(delta.tool_calls)
                    parts.append(text)
                    for chunk in chunker.push(text):
                        queue.put_nowait((self._round, chunk))
        except asyncio.CancelledError:
            if calls and self.tools is not None:
                self.tools.skip(calls, "generation interrupted before it was committed")
            raise
        except ProviderError as e:
            queue.put_nowait(_END)
            raise ReplyFailedError("llm", e) from e
        if rest := chunker.flush():
            queue.put_nowait((self._round, rest))
        return "".join(parts).strip(), tuple(calls)

    async def _speak(self, queue: asyncio.Queue[tuple[int, str] | object]) -> None:
        while (item := await queue.get()) is not _END:
            assert isinstance(item, tuple)
            round_index, chunk = item
            index = len(self.chunks)
            self.chunks.append(chunk)
            self._chunk_round.append(round_index)
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            await self._synthesize(chunk, index)

    async def _synthesize(self, text: str, index: int) -> None:
        samples = 0
        rate = self.tts.capabilities.sample_rate
        if self.timer.tts_started is None:
            self.timer.tts_started = time.monotonic()
        try:
            async with contextlib.aclosing(self.tts.synthesize(text)) as stream:
                async for audio in stream:
                    if samples == 0 and self.timer.tts_first_byte is None:
                        self.timer.tts_first_byte = time.monotonic()
                    samples += audio.sample_count
                    rate = audio.sample_rate
                    self.speaker.push(audio.data, sample_rate=rate, segment=index)
        except ProviderError as e:
            raise ReplyFailedError("tts", e) from e
        self.speaker.end_segment(index)
        self._audio_s[index] = samples / rate
