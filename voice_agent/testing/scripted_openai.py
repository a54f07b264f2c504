"""A scripted OpenAI-compatible server on loopback, for tests of the real `openai` client path.

    async with ScriptedOpenAI(chat=[ChatReply(text=["Hel", "lo"])]) as server:
        connection = OpenAIConnection(api_key="test", base_url=server.base_url)
        ...
        assert server.requests_to(CHAT_PATH)[0].json["messages"][0]["content"] == "hi"

Each endpoint answers from its own queue of scripted replies, in order. An empty queue falls back
to a deterministic default: chat echoes the last user message (a `chat_router` may pick a chat
reply from the request first, when several clients share one server), transcription returns
`default_transcript`, speech returns a tone as long as the text would take to say, each paced by
`default_pacing` (no delay unless given). Speech streams raw PCM, or base64 PCM in server-sent
events when the request asks for `stream_format="sse"`, as OpenAI's does. A reply may be
an `ErrorReply` (an OpenAI-style error with its status) or a `Hang` (headers never come, so the
client times out). A `Timeline` paces a reply: a delay before the first chunk, a delay between
chunks, a stall after some chunks (until an `asyncio.Event` is set, or for good), or an abrupt
disconnect. Every request is recorded, hangs and errors included, before it is answered. The
reply types and their wire form live in `openai_script`.

Speculation makes a call ask again about the same turn, so two rules keep a script one reply per
turn, as a deterministic model and STT would answer: a chat request identical to an earlier one
(same messages and tools) gets the same scripted reply again, without taking the next; and audio
that begins with the previous transcription's audio (its turn, heard for longer) gets the previous
reply again once the script is over, or always with `transcripts_per_turn` (one scripted
transcript per turn, as conversation files give them). Errors and hangs are never replayed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import math
import socket
import struct
import wave
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from voice_agent.testing.openai_script import (
    ChatReply,
    ChatScript,
    DefaultPacing,
    ErrorReply,
    Hang,
    SpeechReply,
    SpeechScript,
    Timeline,
    TranscriptionReply,
    TranscriptionScript,
    chat_chunks,
    chat_completion,
    split_words,
)
from voice_agent.testing.tone import speech_duration_s, tone

CHAT_PATH = "/v1/chat/completions"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"
MODELS_PATH = "/v1/models"
SPEECH_SAMPLE_RATE = 24_000
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o-mini-transcribe", "gpt-4o-mini-tts", "whisper-1")


# Picks the reply to one chat request from its body (None: the queue, then the echo, answer).
ChatRouter = Callable[[Mapping[str, Any]], ChatScript | None]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    json: Any = None  # the parsed body of a JSON request
    form: Mapping[str, str] = field(default_factory=dict)  # text fields of a multipart request
    files: Mapping[str, bytes] = field(default_factory=dict)  # file fields of a multipart request


class ScriptedOpenAI:
    """An aiohttp server speaking the OpenAI wire format from a script, on a free loopback port."""

    def __init__(
        self,
        *,
        chat: Iterable[ChatScript] = (),
        transcriptions: Iterable[TranscriptionScript] = (),
        speech: Iterable[SpeechScript] = (),
        models: Sequence[str] = DEFAULT_MODELS,
        default_transcript: str = "hello",
        chat_router: ChatRouter | None = None,
        default_pacing: DefaultPacing | None = None,
        transcripts_per_turn: bool = False,
    ) -> None:
        """`transcripts_per_turn`: each scripted transcription is one turn, however often it is
        heard (audio extending the previous request's takes its reply again, before the queue)."""
        self.chat: deque[ChatScript] = deque(chat)
        self.chat_router = chat_router
        self.transcriptions: deque[TranscriptionScript] = deque(transcriptions)
        self.speech: deque[SpeechScript] = deque(speech)
        self.models = tuple(models)
        self.default_transcript = default_transcript
        self.default_pacing = default_pacing or DefaultPacing()
        self.transcripts_per_turn = transcripts_per_turn
        self.requests: list[RecordedRequest] = []
        self._closing = asyncio.Event()
        self._recorded = asyncio.Event()  # set, then replaced, on every request
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._ids = itertools.count(1)
        self._answered: dict[str, ChatReply] = {}  # a scripted chat reply by its request
        self._last_heard: tuple[bytes, TranscriptionReply] | None = None  # audio and its reply

    @property
    def base_url(self) -> str:
        """The URL to give the `openai` client, ending in /v1."""
        if self._port is None:
            raise RuntimeError("the scripted server is not running")
        return f"http://127.0.0.1:{self._port}/v1"

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests received on `path`, e.g. `CHAT_PATH`, oldest first."""
        return [r for r in self.requests if r.path == path]

    async def wait_for_requests(self, path: str, count: int = 1) -> list[RecordedRequest]:
        """Wait until `count` requests have reached `path`; bound the wait with a timeout."""
        while len(self.requests_to(path)) < count:
            await self._recorded.wait()
        return self.requests_to(path)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(CHAT_PATH, self._handle_chat)
        app.router.add_post(TRANSCRIPTIONS_PATH, self._handle_transcription)
        app.router.add_post(SPEECH_PATH, self._handle_speech)
        app.router.add_get(MODELS_PATH, self._handle_models)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # binding here, not in aiohttp, tells us the port race-free
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def close(self) -> None:
        """Release hung and stalled requests, then stop listening."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Endpoints

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, json_body=body)
        routed = self.chat_router(body) if self.chat_router is not None else None
        key = json.dumps([body.get("messages"), body.get("tools")], sort_keys=True)
        reply = routed or self._answered.get(key)
        if reply is None:
            reply = self.chat.popleft() if self.chat else _echo(body, self.default_pacing.chat)
            if isinstance(reply, ChatReply):
                self._answered[key] = reply
        if not isinstance(reply, ChatReply):
            return await self._fail(reply)
        model = str(body.get("model", "scripted"))
        completion_id = f"chatcmpl-scripted-{next(self._ids)}"
        if not body.get("stream"):
            await asyncio.sleep(reply.timeline.first_delay_s)
            return web.json_response(chat_completion(reply, completion_id, model))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = chat_chunks(reply, completion_id, model, include_usage=include_usage)
        events = [_sse(chunk) for chunk in chunks]
        return await self._stream(
            request, reply.timeline, events, "text/event-stream", trailer=b"data: [DONE]\n\n"
        )

    async def _handle_transcription(self, request: web.Request) -> web.StreamResponse:
        form, files = await _read_multipart(request)
        self._record(request, form=form, files=files)
        try:
            pcm, duration_s = _wav_frames(files["file"])
        except (KeyError, wave.Error, EOFError, struct.error):
            return await self._fail(
                ErrorReply(400, "Invalid file format.", "invalid_request_error")
            )
        heard = self._last_heard
        longer = heard is not None and bool(heard[0]) and pcm.startswith(heard[0])
        if heard is not None and longer and (self.transcripts_per_turn or not self.transcriptions):
            reply: TranscriptionScript | None = heard[1]  # the same turn, heard for longer
        else:
            reply = self.transcriptions.popleft() if self.transcriptions else None
        if isinstance(reply, ErrorReply | Hang):
            self._last_heard = None
            return await self._fail(reply)
        reply = reply or TranscriptionReply(
            text=self.default_transcript, timeline=self.default_pacing.transcription
        )
        self._last_heard = (pcm, reply)
        logprobs = _logprobs(reply) if _asks_for_logprobs(form) else None
        if form.get("stream", "").lower() == "true":
            events = [
                _sse({"type": "transcript.text.delta", "delta": word})
                for word in split_words(reply.text)
            ]
            done: dict[str, Any] = {
                "type": "transcript.text.done",
                "text": reply.text,
                "usage": _audio_usage(duration_s),
            }
            if logprobs is not None:
                done["logprobs"] = logprobs
            events.append(_sse(done))
            return await self._stream(request, reply.timeline, events, "text/event-stream")
        await asyncio.sleep(reply.timeline.first_delay_s)
        response_format = form.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=reply.text, content_type="text/plain")
        if response_format == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": reply.language,
                    "duration": duration_s,
                    "text": reply.text,
                    "segments": [],
                }
            )
        body: dict[str, Any] = {"text": reply.text, "usage": _audio_usage(duration_s)}
        if logprobs is not None:
            body["logprobs"] = logprobs
        return web.json_response(body)

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, json_body=body)
        reply = (
            self.speech.popleft()
            if self.speech
            else SpeechReply(timeline=self.default_pacing.speech)
        )
        if not isinstance(reply, SpeechReply):
            return await self._fail(reply)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return await self._fail(ErrorReply(400, "input is required", "invalid_request_error"))
        stream_format = body.get("stream_format", "audio")
        if body.get("response_format") != "pcm" or stream_format not in ("audio", "sse"):
            return await self._fail(
                ErrorReply(400, "the scripted server speaks pcm only", "invalid_request_error")
            )
        duration_s = reply.duration_s if reply.duration_s is not None else speech_duration_s(text)
        pcm = tone(duration_s, sample_rate=SPEECH_SAMPLE_RATE, frequency_hz=reply.frequency_hz)
        size = max(1, reply.chunk_bytes)
        chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
        if stream_format == "sse":
            events = [
                _sse({"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()})
                for c in chunks
            ]
            usage = {"input_tokens": len(text.split()), "output_tokens": len(chunks)}
            done: dict[str, Any] = {
                "type": "speech.audio.done",
                "usage": usage | {"total_tokens": sum(usage.values())},
            }
            events.append(_sse(done))
            return await self._stream(request, reply.timeline, events, "text/event-stream")
        return await self._stream(request, reply.timeline, chunks, "audio/pcm")

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return await self._fail(
            ErrorReply(404, f"no route {request.path}", "invalid_request_error")
        )

    # Helpers

    def _record(
        self,
        request: web.Request,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                json=json_body,
                form=dict(form or {}),
                files=dict(files or {}),
            )
        )
        self._recorded.set()
        self._recorded = asyncio.Event()

    async def _fail(self, reply: ErrorReply | Hang) -> web.StreamResponse:
        if isinstance(reply, Hang):
            await self._closing.wait()
            return web.Response(status=503)  # the client left long ago; this only ends the handler
        headers = {}
        if reply.retry_after_s is not None:
            headers["Retry-After"] = f"{reply.retry_after_s:g}"
        error = {"message": reply.message, "type": reply.type, "param": None, "code": None}
        return web.json_response({"error": error}, status=reply.status, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        timeline: Timeline,
        chunks: Sequence[bytes],
        content_type: str,
        trailer: bytes = b"",
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            for sent, chunk in enumerate(chunks):
                if sent == timeline.disconnect_after:
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if sent == timeline.stall_after:
                    await self._stall(timeline.resume)
                    if self._closing.is_set():
                        return response
                await asyncio.sleep(timeline.first_delay_s if sent == 0 else timeline.chunk_delay_s)
                await response.write(chunk)
            if trailer:
                await response.write(trailer)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped listening (timeout or barge-in); nothing is owed
        return response

    async def _stall(self, resume: asyncio.Event | None) -> None:
        waiters = [asyncio.ensure_future(self._closing.wait())]
        if resume is not None:
            waiters.append(asyncio.ensure_future(resume.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _echo(body: Mapping[str, Any], timeline: Timeline) -> ChatReply:
    said = next(
        (m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"),
        None,
    )
    if isinstance(said, list):  # content parts, as some clients send even plain text
        said = " ".join(str(p.get("text", "")) for p in said if isinstance(p, dict)).strip()
    return ChatReply(text=f"You said: {said}" if said else "Hello.", timeline=timeline)


def _asks_for_logprobs(form: Mapping[str, str]) -> bool:
    # The SDK sends a list field as `include[]`; a plain form may name it `include`.
    return "logprobs" in (form.get("include[]"), form.get("include"))


def _logprobs(reply: TranscriptionReply) -> list[dict[str, Any]]:
    """One entry a word, each with the log of the reply's confidence, so that their geometric
    mean is that confidence."""
    logprob = 0.0 if reply.confidence is None else math.log(max(reply.confidence, 1e-9))
    return [
        {"token": word, "logprob": logprob, "bytes": list(word.encode())}
        for word in split_words(reply.text)
    ]


def _sse(data: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _audio_usage(duration_s: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(duration_s, 3)}


def _wav_frames(data: bytes) -> tuple[bytes, float]:
    """A WAV file's sample data and its duration in seconds."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.readframes(wav.getnframes()), wav.getnframes() / wav.getframerate()


async def _read_multipart(request: web.Request) -> tuple[dict[str, str], dict[str, bytes]]:
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            files[name] = value.file.read()
        else:
            form[name] = str(value)
    return form, files
