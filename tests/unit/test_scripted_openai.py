"""The scripted OpenAI-compatible server: wire format, script, pacing, failures and recording."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.audio import TranscriptionTextDoneEvent

from voice_agent.providers.base import PcmAudio
from voice_agent.testing import (
    CHAT_PATH,
    SPEECH_PATH,
    SPEECH_SAMPLE_RATE,
    TRANSCRIPTIONS_PATH,
    ChatReply,
    DefaultPacing,
    ErrorReply,
    Hang,
    ScriptedOpenAI,
    ScriptedToolCall,
    SpeechReply,
    Timeline,
    TranscriptionReply,
    speech_duration_s,
    tone,
)

WAV = PcmAudio(data=tone(0.5, sample_rate=16_000), sample_rate=16_000).to_wav()
GUARD_S = 5.0  # an upper bound that only a broken server reaches


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAI]:
    async with ScriptedOpenAI() as s:
        yield s


@pytest.fixture
async def client(server: ScriptedOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
    yield c
    await c.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _sse_data(response: aiohttp.ClientResponse) -> list[str]:
    body = (await response.read()).decode()
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


async def _chat_chunks(
    http: aiohttp.ClientSession, server: ScriptedOpenAI, **body: Any
) -> list[dict[str, Any]]:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with http.post(server.base_url + "/chat/completions", json=payload | body) as resp:
        data = await _sse_data(resp)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_base_url_points_at_loopback_v1(server: ScriptedOpenAI) -> None:
    """The server listens on 127.0.0.1 and its base URL ends in /v1."""
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")


async def test_base_url_before_start_is_an_error() -> None:
    """Asking for the URL of a server that is not running fails clearly."""
    with pytest.raises(RuntimeError):
        _ = ScriptedOpenAI().base_url


async def test_models_lists_the_configured_models(client: openai.AsyncOpenAI) -> None:
    """GET /v1/models answers in the list format the SDK pages through."""
    ids = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in ids


async def test_chat_stream_is_sse_ending_in_done(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """A streamed chat answer is `data:` events of chunks followed by `data: [DONE]`."""
    server.chat.append(ChatReply(text=["Hel", "lo"]))
    chunks = await _chat_chunks(http, server)
    texts = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert texts[:2] == ["Hel", "lo"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_sends_usage_only_when_asked(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """The usage chunk (no choices) comes last, and only with stream_options.include_usage."""
    server.chat.extend([ChatReply(text="a b"), ChatReply(text="a b")])
    plain = await _chat_chunks(http, server)
    with_usage = await _chat_chunks(http, server, stream_options={"include_usage": True})
    assert all("usage" not in c for c in plain)
    assert with_usage[-1]["choices"] == []
    assert with_usage[-1]["usage"]["completion_tokens"] == 2


async def test_chat_stream_splits_tool_call_arguments_across_chunks(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """A tool call's arguments arrive in `fragments` chunks; only the first names the call."""
    args = '{"city": "Paris"}'
    server.chat.append(ChatReply(tool_calls=[ScriptedToolCall("weather", args, fragments=4)]))
    chunks = await _chat_chunks(http, server)
    fragments = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(fragments) == 4
    assert fragments[0]["function"]["name"] == "weather"
    assert all("name" not in f["function"] for f in fragments[1:])
    assert "".join(f["function"]["arguments"] for f in fragments) == args


async def test_chat_without_stream_returns_a_completion(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """A non-streamed chat answer is one completion with the message, tool calls and usage."""
    server.chat.append(ChatReply(text="Sure.", tool_calls=[ScriptedToolCall("lookup", "{}")]))
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    message = completion.choices[0].message
    assert message.content == "Sure."
    assert message.tool_calls is not None
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None


async def test_chat_with_empty_script_echoes_the_last_user_message(
    client: openai.AsyncOpenAI,
) -> None:
    """With nothing scripted, chat answers "You said: ..." with the last user message."""
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "the weather"}]
    )
    assert completion.choices[0].message.content == "You said: the weather"


async def test_transcription_answers_json_by_default(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """A transcription request answers the scripted text as JSON."""
    server.transcriptions.append(TranscriptionReply(text="book a table"))
    result = await client.audio.transcriptions.create(
        file=("a.wav", WAV, "audio/wav"), model="whisper-1"
    )
    assert result.text == "book a table"


async def test_transcription_answers_plain_text_when_asked(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """response_format=text answers the bare text."""
    server.transcriptions.append(TranscriptionReply(text="book a table"))
    result = await client.audio.transcriptions.create(
        file=("a.wav", WAV, "audio/wav"), model="whisper-1", response_format="text"
    )
    assert result == "book a table"


async def test_transcription_verbose_json_reports_language_and_duration(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """response_format=verbose_json carries the language and the audio's duration."""
    server.transcriptions.append(TranscriptionReply(text="hola", language="es"))
    result = await client.audio.transcriptions.create(
        file=("a.wav", WAV, "audio/wav"), model="whisper-1", response_format="verbose_json"
    )
    assert (result.language, result.duration) == ("es", 0.5)


async def test_transcription_streams_deltas_then_done(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """stream=true sends transcript.text.delta events, then transcript.text.done."""
    server.transcriptions.append(TranscriptionReply(text="book a table"))
    stream = await client.audio.transcriptions.create(
        file=("a.wav", WAV, "audio/wav"), model="gpt-4o-mini-transcribe", stream=True
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert done.text == "book a table"


async def test_transcription_refuses_a_file_that_is_not_wav(client: openai.AsyncOpenAI) -> None:
    """A file that is not a WAV is answered with 400, as a real server would."""
    with pytest.raises(openai.BadRequestError):
        await client.audio.transcriptions.create(
            file=("a.wav", b"not audio", "audio/wav"), model="whisper-1"
        )


async def test_speech_is_a_tone_as_long_as_the_text_takes(
    client: openai.AsyncOpenAI,
) -> None:
    """Speech is the deterministic tone for the text's speaking time, 24 kHz s16le."""
    text = "Your table is booked for eight."
    async with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=text, response_format="pcm"
    ) as response:
        body = await response.read()
    assert body == tone(speech_duration_s(text), sample_rate=SPEECH_SAMPLE_RATE)


async def test_speech_refuses_formats_other_than_pcm(client: openai.AsyncOpenAI) -> None:
    """Only raw PCM is spoken; other formats are answered with 400."""
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(
            model="gpt-4o-mini-tts", voice="alloy", input="hi", response_format="mp3"
        )


async def test_error_reply_is_an_openai_error_body_with_retry_after(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """An ErrorReply answers its status, an OpenAI error object and Retry-After when given."""
    server.speech.append(ErrorReply(429, "slow down", "rate_limit_error", retry_after_s=2))
    async with http.post(server.base_url + "/audio/speech", json={"input": "hi"}) as resp:
        body = await resp.json()
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    assert body["error"]["message"] == "slow down"


async def test_unknown_route_is_an_openai_style_404(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """A route the server does not implement answers 404 with an OpenAI error body."""
    async with http.get(server.base_url + "/embeddings") as resp:
        body = await resp.json()
    assert resp.status == 404
    assert "error" in body


async def test_every_request_is_recorded_errors_included(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """Requests are recorded with their bodies before they are answered, failures too."""
    server.chat.append(ErrorReply(500))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    await client.audio.transcriptions.create(
        file=("a.wav", WAV, "audio/wav"), model="whisper-1", language="en"
    )
    chat, transcription = server.requests
    assert chat.path == CHAT_PATH
    assert chat.json["messages"] == [{"role": "user", "content": "hi"}]
    assert transcription.path == TRANSCRIPTIONS_PATH
    assert transcription.form["language"] == "en"
    assert transcription.files["file"] == WAV


async def test_hang_never_answers_until_the_server_closes(http: aiohttp.ClientSession) -> None:
    """A Hang keeps the request open with no answer; closing the server releases it."""
    server = ScriptedOpenAI(speech=[Hang()])
    await server.start()
    request = asyncio.ensure_future(
        http.post(server.base_url + "/audio/speech", json={"input": "hi"})
    )
    async with asyncio.timeout(GUARD_S):
        await server.wait_for_requests(SPEECH_PATH)
    assert not request.done()
    async with asyncio.timeout(GUARD_S):
        await server.close()
        try:
            response = await request
        except aiohttp.ClientError:
            return
    assert response.status == 503
    response.release()


async def test_stall_holds_the_stream_until_resumed(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """A stalled stream sends its first chunks, then nothing until `resume` is set."""
    resume = asyncio.Event()
    timeline = Timeline(stall_after=1, resume=resume)
    server.speech.append(SpeechReply(duration_s=0.1, chunk_bytes=1000, timeline=timeline))
    payload = {"input": "hi", "response_format": "pcm"}
    async with (
        asyncio.timeout(GUARD_S),
        http.post(server.base_url + "/audio/speech", json=payload) as resp,
    ):
        first = await resp.content.readexactly(1000)  # arrives although the rest is held back
        resume.set()
        rest = await resp.read()
    assert len(first) + len(rest) == 0.1 * SPEECH_SAMPLE_RATE * 2


async def test_first_delay_postpones_the_first_chunk(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """The first chunk of a stream arrives no sooner than the timeline's first delay."""
    server.chat.append(ChatReply(text="hi", timeline=Timeline(first_delay_s=0.2)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _chat_chunks(http, server)
    assert loop.time() - started >= 0.2


async def test_chat_router_answers_by_request_before_the_queue(
    server: ScriptedOpenAI, client: openai.AsyncOpenAI
) -> None:
    """A router picks replies from the request (here by the user's words); what it leaves
    (None) falls to the queue."""

    def route(body: Any) -> ChatReply | None:
        said = body["messages"][-1]["content"]
        return ChatReply(text="Routed.") if "route me" in said else None

    server.chat_router = route
    server.chat.append(ChatReply(text="Queued."))

    async def ask(text: str) -> str | None:
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )
        return reply.choices[0].message.content

    assert await ask("please route me") == "Routed."
    assert await ask("anything else") == "Queued."
    assert await ask("route me again") == "Routed."


async def test_speech_streams_base64_pcm_events_when_asked_for_sse(
    http: aiohttp.ClientSession, server: ScriptedOpenAI
) -> None:
    """With stream_format "sse", speech arrives as base64 PCM delta events, then a done event."""
    text = "Your table is booked."
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": text}
    async with http.post(
        server.base_url + "/audio/speech",
        json=body | {"response_format": "pcm", "stream_format": "sse"},
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(d) for d in await _sse_data(resp)]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert pcm == tone(speech_duration_s(text), sample_rate=SPEECH_SAMPLE_RATE)


async def test_chat_content_parts_are_echoed_as_their_text(client: openai.AsyncOpenAI) -> None:
    """A user message sent as content parts is echoed as its text, like a plain string."""
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]
    )
    assert reply.choices[0].message.content == "You said: hi there"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        ("/audio/speech", {"model": "t", "voice": "v", "input": "hi", "response_format": "pcm"}),
    ],
)
async def test_default_pacing_delays_default_replies(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    """Default replies wait for the endpoint's delay from `DefaultPacing` before answering."""
    pacing = DefaultPacing.from_ms(stt_ms=0, first_token_ms=200, tts_first_byte_ms=200)
    loop = asyncio.get_running_loop()
    async with ScriptedOpenAI(default_pacing=pacing) as server:
        started = loop.time()
        async with http.post(server.base_url + path, json=body) as resp:
            await resp.read()
    assert loop.time() - started >= 0.2


async def test_default_pacing_delays_transcription(client: openai.AsyncOpenAI) -> None:
    """The default transcription waits for the STT delay of `DefaultPacing`."""
    pacing = DefaultPacing.from_ms(stt_ms=200, first_token_ms=0, tts_first_byte_ms=0)
    loop = asyncio.get_running_loop()
    async with ScriptedOpenAI(default_pacing=pacing, default_transcript="ok") as server:
        c = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        started = loop.time()
        result = await c.audio.transcriptions.create(file=("a.wav", WAV, "audio/wav"), model="w")
        await c.close()
    assert result.text == "ok"
    assert loop.time() - started >= 0.2


async def test_the_same_chat_request_gets_the_same_scripted_reply(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """A request identical to an earlier one (a speculation asked again) replays its reply; a
    different request takes the next one."""
    server.chat.extend([ChatReply(text="first"), ChatReply(text="second")])
    same = [{"role": "user", "content": "my VPN drops"}]

    async def ask(messages: list[dict[str, str]]) -> str | None:
        completion = await client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        return completion.choices[0].message.content

    assert [await ask(same), await ask(same)] == ["first", "first"]
    assert await ask([*same, {"role": "user", "content": "and now?"}]) == "second"


async def test_an_error_reply_is_not_replayed(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """A retry of a failed request takes the next scripted reply."""
    server.chat.extend([ErrorReply(500, "boom"), ChatReply(text="recovered")])
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=messages)
    completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "recovered"


async def test_longer_audio_of_the_last_scripted_turn_gets_its_transcript_again(
    client: openai.AsyncOpenAI, server: ScriptedOpenAI
) -> None:
    """Scripted replies answer in order; once they are over, audio that begins with the previous
    request's audio is that turn heard for longer (its text again), other audio the default."""
    server.transcriptions.extend(
        [TranscriptionReply(text="turn one"), TranscriptionReply(text="turn two")]
    )
    part = tone(0.3, sample_rate=16_000)
    longer = part + tone(0.4, sample_rate=16_000, frequency_hz=300.0)

    async def hear(pcm: bytes) -> str:
        wav = PcmAudio(data=pcm, sample_rate=16_000).to_wav()
        result = await client.audio.transcriptions.create(
            file=("a.wav", wav, "audio/wav"), model="w"
        )
        return result.text

    assert [await hear(part), await hear(longer)] == ["turn one", "turn two"]
    longest = longer + tone(0.2, sample_rate=16_000, frequency_hz=600.0)
    assert await hear(longest) == "turn two"
    assert await hear(tone(0.5, sample_rate=16_000, frequency_hz=500.0)) == "hello"


async def test_transcripts_per_turn_give_a_longer_hearing_its_turn_text() -> None:
    """With one scripted transcript per turn, a turn heard again for longer keeps its text and
    the next turn's audio takes the next one."""
    turns = [TranscriptionReply(text="turn one"), TranscriptionReply(text="turn two")]
    async with ScriptedOpenAI(transcriptions=turns, transcripts_per_turn=True) as server:
        c = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        part = tone(0.3, sample_rate=16_000)
        heard = []
        for pcm in (
            part,
            part + tone(0.4, sample_rate=16_000, frequency_hz=300.0),
            tone(0.5, sample_rate=16_000, frequency_hz=500.0),
        ):
            wav = PcmAudio(data=pcm, sample_rate=16_000).to_wav()
            result = await c.audio.transcriptions.create(
                file=("a.wav", wav, "audio/wav"), model="w"
            )
            heard.append(result.text)
        await c.close()
    assert heard == ["turn one", "turn one", "turn two"]
