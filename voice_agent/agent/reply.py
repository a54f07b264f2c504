"""One agent turn: LLM tokens → speakable chunks → the output, overlapped and cancellable.

The LLM streams text; the sentence chunker hands each finished sentence or clause to the output at
once, so on a voice call (`spoken.SpokenOutput`: TTS into the room) the first audio plays while
the model is still writing the rest. The output knows how much of each chunk reached the caller,
so a reply cut by a barge-in is recorded as what was heard. A reply needs no room and no audio of
its own: a text output fits behind the same `ReplyOutput` seam. The providers retry by their own
rule (`providers/retry.py`); a failure that reaches the reply raises `ReplyFailedError` naming the
stage, and the session says its fallback line.

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
from typing import Any, Protocol

from voice_agent import tracing
from voice_agent.agent.metrics import TurnTimer
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ProviderError, VoiceAgentError
from voice_agent.pipeline.chunker import SentenceChunker
from voice_agent.protocol import Stage
from voice_agent.providers.base import LLM, Usage

_END = object()


class ReplyFailedError(VoiceAgentError):
    """A stage of the reply failed even after its retry; `stage` is "llm" or "tts"."""

    def __init__(self, stage: Stage, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause}")
        self.stage: Stage = stage


class ReplyOutput(Protocol):
    """Where a reply's chunks go, and how much of each the other side has received."""

    def begin(self, on_first_output: Callable[[float], None]) -> None:
        """A new reply: call back (with the monotonic moment) when its first output is out."""
        ...

    async def say(self, text: str, index: int) -> None:
        """Deliver chunk number `index`; a `ProviderError` when its stage fails."""
        ...

    def heard(self, index: int) -> float:
        """How much of chunk `index` has reached the other side, from 0 (nothing) to 1 (all)."""
        ...

    async def finish(self) -> None:
        """Until everything said has been delivered (or dropped by an interruption)."""
        ...


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
    """Says one reply, from a model prompt or from fixed text."""

    output: ReplyOutput
    timer: TurnTimer
    llm: LLM | None = None
    messages: Sequence[ChatMessage] = ()
    fixed_text: str | None = None
    on_first_output: Callable[[float], None] | None = None
    on_chunk: Callable[[str], None] | None = None
    tools: ReplyTools | None = None
    max_tool_rounds: int = 4
    chunks: list[str] = field(default_factory=list)
    committed: list[ChatMessage] = field(default_factory=list)
    """Messages of finished rounds (assistant text with tool calls, tool results), in order."""
    usage: ReplyUsage = field(default_factory=ReplyUsage)
    _chunk_round: list[int] = field(default_factory=list)
    _round: int = 0

    async def run(self) -> ReplyOutcome:
        """Generate and say the whole reply; raises `ReplyFailedError` when a stage fails."""
        queue: asyncio.Queue[tuple[int, str] | object] = asyncio.Queue()
        self.output.begin(self._first_output)
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
        await self.output.finish()
        text = " ".join(self.chunks)
        return ReplyOutcome(text=text, heard=text)

    def heard_text(self, *, last_round_only: bool = False) -> str:
        """The words the listener heard so far (call after the output stopped or paused);
        with `last_round_only`, only of the round after the last committed tool calls."""
        heard = []
        for i, chunk in enumerate(self.chunks):
            if last_round_only and self._chunk_round[i] != self._round:
                continue
            fraction = self.output.heard(i)
            if fraction <= 0:
                break
            if fraction >= 1:
                heard.append(chunk)
                continue
            words = chunk.split()
            heard.append(" ".join(words[: int(len(words) * fraction)]))
            break
        return " ".join(h for h in heard if h)

    def _first_output(self, at: float) -> None:
        self.timer.first_audio = at
        if self.on_first_output is not None:
            self.on_first_output(at)

    async def _write(self, queue: asyncio.Queue[tuple[int, str] | object]) -> None:
        messages = list(self.messages)
        notice: str | None = None
        while True:
            offer = self.tools is not None and self._round < self.max_tool_rounds
            schemas = self.tools.schemas() if offer and self.tools is not None else None
            with tracing.span("llm", round=self._round, tools_offered=schemas is not None):
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
            try:
                await self.output.say(chunk, index)
            except ProviderError as e:
                raise ReplyFailedError("tts", e) from e
