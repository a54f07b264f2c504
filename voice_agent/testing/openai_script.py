"""What the scripted OpenAI server answers: replies, their timelines, and their wire form.

A reply for each endpoint (`ChatReply`, `TranscriptionReply`, `SpeechReply`), or a failure
(`ErrorReply`, `Hang`), paced by a `Timeline`. `chat_chunks` and `chat_completion` render a
`ChatReply` as the objects the OpenAI chat API sends, streamed or whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Timeline:
    """How a reply is paced: chunks of a stream, or the whole body when not streamed."""

    first_delay_s: float = 0.0  # before the first chunk (after the headers, when streaming)
    chunk_delay_s: float = 0.0  # between chunks
    stall_after: int | None = None  # after this many chunks, wait for `resume` (for good if None)
    resume: asyncio.Event | None = None
    disconnect_after: int | None = None  # after this many chunks, drop the connection


@dataclass(frozen=True)
class ErrorReply:
    """An OpenAI-style error body with an HTTP status, e.g. 429 or 500."""

    status: int
    message: str = "scripted error"
    type: str = "server_error"
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Hang:
    """Never answer: the request waits until the client gives up or the server closes."""


@dataclass(frozen=True)
class ScriptedToolCall:
    """A tool call the scripted model makes; its arguments are spread over `fragments` chunks."""

    name: str
    arguments: str = "{}"
    id: str | None = None  # "call_<n>" when None
    fragments: int = 3


@dataclass(frozen=True)
class ChatReply:
    """A chat completion: text (a str is split into words, a sequence sent piece by piece)."""

    text: str | Sequence[str] = ""
    tool_calls: Sequence[ScriptedToolCall] = ()
    prompt_tokens: int = 20
    finish_reason: str | None = None  # "tool_calls" when there are calls, else "stop"
    timeline: Timeline = field(default_factory=Timeline)


@dataclass(frozen=True)
class TranscriptionReply:
    """A transcription; streamed, it arrives word by word and then as a whole."""

    text: str
    language: str = "en"
    timeline: Timeline = field(default_factory=Timeline)
    # The words' probability, returned as one log probability per word when the request asks
    # for logprobs (their geometric mean is then this); None: the same as 1.0.
    confidence: float | None = None


@dataclass(frozen=True)
class SpeechReply:
    """Speech as a tone (24 kHz s16le) sent in `chunk_bytes` pieces; odd sizes are allowed."""

    duration_s: float | None = None  # None: as long as the text would take to say
    frequency_hz: float = 440.0
    chunk_bytes: int = 4800
    timeline: Timeline = field(default_factory=Timeline)


@dataclass(frozen=True)
class DefaultPacing:
    """How the default replies (those of an empty queue) are paced, per endpoint: fixed model
    delays, e.g. STT 120 ms, first token 150 ms and TTS first byte 60 ms for a benchmark."""

    transcription: Timeline = field(default_factory=Timeline)
    chat: Timeline = field(default_factory=Timeline)
    speech: Timeline = field(default_factory=Timeline)

    @classmethod
    def from_ms(
        cls, *, stt_ms: float, first_token_ms: float, tts_first_byte_ms: float
    ) -> DefaultPacing:
        """Pacing from three delays in milliseconds."""
        return cls(
            transcription=Timeline(first_delay_s=stt_ms / 1000),
            chat=Timeline(first_delay_s=first_token_ms / 1000),
            speech=Timeline(first_delay_s=tts_first_byte_ms / 1000),
        )


ChatScript = ChatReply | ErrorReply | Hang
TranscriptionScript = TranscriptionReply | ErrorReply | Hang
SpeechScript = SpeechReply | ErrorReply | Hang


def split_words(text: str) -> list[str]:
    """Split into pieces that join back to `text`: each word keeps the space before it."""
    words = text.split(" ")
    return [words[0], *(f" {w}" for w in words[1:])] if text else []


def _tokens(reply: ChatReply) -> list[str]:
    return split_words(reply.text) if isinstance(reply.text, str) else list(reply.text)


def _finish_reason(reply: ChatReply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: ChatReply) -> dict[str, int]:
    completion = len(_tokens(reply)) + sum(max(1, c.fragments) for c in reply.tool_calls)
    total = reply.prompt_tokens + completion
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": total,
    }


def _call_id(call: ScriptedToolCall, index: int) -> str:
    return call.id or f"call_{index}"


def _split(text: str, parts: int) -> list[str]:
    """`text` in `parts` nearly equal pieces (fewer when it is shorter than that)."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def chat_chunks(
    reply: ChatReply, completion_id: str, model: str, *, include_usage: bool
) -> list[dict[str, Any]]:
    """The reply as streamed `chat.completion.chunk` objects, usage last when asked for."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None
        return body

    tokens = _tokens(reply)
    chunks = [chunk({"role": "assistant", "content": tokens[0] if tokens else ""})]
    chunks += [chunk({"content": token}) for token in tokens[1:]]
    for index, call in enumerate(reply.tool_calls):
        pieces = _split(call.arguments, call.fragments) if call.arguments else [""]
        head = {
            "index": index,
            "id": _call_id(call, index),
            "type": "function",
            "function": {"name": call.name, "arguments": pieces[0]},
        }
        chunks.append(chunk({"tool_calls": [head]}))
        for piece in pieces[1:]:
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    chunks.append(chunk({}, _finish_reason(reply)))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": _usage(reply)})
    return chunks


def chat_completion(reply: ChatReply, completion_id: str, model: str) -> dict[str, Any]:
    """The reply as one `chat.completion` object."""
    text = "".join(_tokens(reply))
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(call, index),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply)}],
        "usage": _usage(reply),
    }
