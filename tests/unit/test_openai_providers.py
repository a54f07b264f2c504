"""The OpenAI providers against the scripted server, through the real `openai` client."""

from __future__ import annotations

import asyncio
import io
import json
import math
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import pytest
from openai.types.audio.transcription import Logprob

from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.devstack.processes import free_port
from voice_agent.exceptions import (
    ConfigError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderTimeoutError,
)
from voice_agent.providers.base import LLMDelta, PcmAudio
from voice_agent.providers.openai_connection import PLACEHOLDER_API_KEY, OpenAIConnection
from voice_agent.providers.openai_llm import OpenAILLM, wire_message, wire_tool_call
from voice_agent.providers.openai_stt import OpenAISTT, confidence_of
from voice_agent.providers.openai_tts import OpenAITTS
from voice_agent.settings import Settings
from voice_agent.testing import (
    CHAT_PATH,
    SPEECH_PATH,
    SPEECH_SAMPLE_RATE,
    TRANSCRIPTIONS_PATH,
    ChatReply,
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

SHORT_TIMEOUT_S = 0.3
GUARD_S = 5.0  # an upper bound that only a broken provider reaches
SEGMENT = PcmAudio(data=tone(0.5, sample_rate=16_000), sample_rate=16_000)
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAI]:
    async with ScriptedOpenAI() as s:
        yield s


@pytest.fixture
def connection(server: ScriptedOpenAI) -> OpenAIConnection:
    return OpenAIConnection(api_key="test-key", base_url=server.base_url, timeout_s=SHORT_TIMEOUT_S)


@pytest.fixture
async def llm(connection: OpenAIConnection) -> AsyncIterator[OpenAILLM]:
    async with OpenAILLM(connection=connection, model="gpt-4o-mini") as provider:
        yield provider


@pytest.fixture
async def stt(connection: OpenAIConnection) -> AsyncIterator[OpenAISTT]:
    async with OpenAISTT(connection=connection, model="gpt-4o-mini-transcribe") as provider:
        yield provider


@pytest.fixture
async def tts(connection: OpenAIConnection) -> AsyncIterator[OpenAITTS]:
    async with OpenAITTS(connection=connection, model="gpt-4o-mini-tts", voice="alloy") as p:
        yield p


async def _collect(
    llm: OpenAILLM, messages: Sequence[ChatMessage] = (), tools: list[dict[str, Any]] | None = None
) -> list[LLMDelta]:
    async with asyncio.timeout(GUARD_S):
        return [d async for d in llm.stream(messages or [ChatMessage.user("hi")], tools=tools)]


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"openai_api_key": None, "openai_base_url": None} | overrides
    return Settings(_env_file=None, **values)


# Connection


def test_connection_needs_a_key_or_a_base_url() -> None:
    """Without OPENAI_API_KEY or OPENAI_BASE_URL the OpenAI providers cannot start."""
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIConnection.from_settings(_settings())


def test_connection_to_a_local_server_uses_a_placeholder_key() -> None:
    """A base URL without a key gets a placeholder, since local servers ignore it."""
    connection = OpenAIConnection.from_settings(_settings(openai_base_url="http://127.0.0.1:1/v1"))
    assert connection.api_key == PLACEHOLDER_API_KEY


def test_connection_takes_key_url_and_timeout_from_settings() -> None:
    """The key, base URL and provider timeout come from the settings."""
    settings = _settings(
        openai_api_key="sk-real", openai_base_url="http://h/v1", provider_timeout_s=3
    )
    connection = OpenAIConnection.from_settings(settings)
    assert (connection.api_key, connection.base_url, connection.timeout_s) == (
        "sk-real",
        "http://h/v1",
        3,
    )


def test_connection_repr_hides_the_api_key() -> None:
    """The API key never shows in a connection's repr, so it cannot reach a log line."""
    assert "sk-secret" not in repr(OpenAIConnection(api_key="sk-secret"))


async def test_providers_from_settings_use_the_configured_models() -> None:
    """from_settings picks the STT, LLM and TTS models and the voice from the settings."""
    settings = _settings(
        openai_api_key="sk-test",
        stt_model="whisper-1",
        llm_model="my-llm",
        tts_model="my-tts",
        tts_voice="verse",
    )
    async with (
        OpenAISTT.from_settings(settings) as stt,
        OpenAILLM.from_settings(settings) as llm,
        OpenAITTS.from_settings(settings) as tts,
    ):
        assert (stt.model, llm.model, tts.model, tts.voice) == (
            "whisper-1",
            "my-llm",
            "my-tts",
            "verse",
        )


# LLM


async def test_llm_streams_text_in_order(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """Text deltas arrive one by one, in order, then a closing delta with no text."""
    server.chat.append(ChatReply(text=["It ", "is ", "sunny."]))
    deltas = await _collect(llm)
    assert [d.text for d in deltas] == ["It ", "is ", "sunny.", ""]


async def test_llm_yields_the_first_token_before_the_rest_is_sent(
    llm: OpenAILLM, server: ScriptedOpenAI
) -> None:
    """The first delta reaches the caller while the server still holds back the rest."""
    resume = asyncio.Event()
    server.chat.append(
        ChatReply(text=["One", " two"], timeline=Timeline(stall_after=1, resume=resume))
    )
    async with asyncio.timeout(GUARD_S), aclosing(llm.stream([ChatMessage.user("hi")])) as stream:
        first = await anext(stream)
        resume.set()
        rest = [d.text async for d in stream]
    assert first.text == "One"
    assert rest == [" two", ""]


async def test_llm_assembles_tool_calls_split_across_chunks(
    llm: OpenAILLM, server: ScriptedOpenAI
) -> None:
    """Tool-call fragments spread over many chunks become whole calls in the last delta."""
    server.chat.append(
        ChatReply(
            tool_calls=[
                ScriptedToolCall("get_weather", '{"city": "Paris"}', id="call_a", fragments=5),
                ScriptedToolCall("get_weather", '{"city": "Rome"}', id="call_b", fragments=3),
            ]
        )
    )
    deltas = await _collect(llm, tools=[WEATHER_TOOL])
    assert deltas[-1].tool_calls == (
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city": "Rome"}'),
    )
    assert deltas[-1].finish_reason == "tool_calls"


async def test_llm_reports_usage_in_the_last_delta(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """Prompt and completion tokens arrive with the last delta, and the request asked for them."""
    server.chat.append(ChatReply(text=["a", "b", "c"], prompt_tokens=42))
    deltas = await _collect(llm)
    usage = deltas[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (42, 3)
    assert server.requests_to(CHAT_PATH)[0].json["stream_options"] == {"include_usage": True}


async def test_llm_sends_messages_and_tools_in_the_wire_format(
    llm: OpenAILLM, server: ScriptedOpenAI
) -> None:
    """History with a tool round trip goes out as OpenAI messages; assistant content is ""."""
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    history = [
        ChatMessage.system("Be brief."),
        ChatMessage.user("Weather in Paris?"),
        ChatMessage.assistant(tool_calls=[call]),
        ChatMessage.tool("call_1", '{"sky": "clear"}'),
    ]
    await _collect(llm, history, tools=[WEATHER_TOOL])
    body = server.requests_to(CHAT_PATH)[0].json
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["tools"] == [WEATHER_TOOL]
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert body["messages"][3] == {
        "role": "tool",
        "content": '{"sky": "clear"}',
        "tool_call_id": "call_1",
    }


async def test_llm_sends_no_tools_key_without_tools(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """A request without tools leaves the key out rather than sending an empty list."""
    await _collect(llm)
    assert "tools" not in server.requests_to(CHAT_PATH)[0].json


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_llm_server_errors_and_rate_limits_are_retryable(
    llm: OpenAILLM, server: ScriptedOpenAI, status: int
) -> None:
    """HTTP 5xx and 429 become a retryable ProviderResponseError carrying the status."""
    server.chat.append(ErrorReply(status))
    with pytest.raises(ProviderResponseError) as caught:
        await _collect(llm)
    assert (caught.value.status, caught.value.retryable) == (status, True)
    assert caught.value.provider == "openai.llm"


async def test_llm_bad_request_is_not_retryable(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """HTTP 400 becomes a ProviderResponseError that trying again will not fix."""
    server.chat.append(ErrorReply(400, type="invalid_request_error"))
    with pytest.raises(ProviderResponseError) as caught:
        await _collect(llm)
    assert (caught.value.status, caught.value.retryable) == (400, False)


async def test_llm_no_answer_is_a_timeout(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """A server that never answers becomes a retryable ProviderTimeoutError."""
    server.chat.append(Hang())
    with pytest.raises(ProviderTimeoutError) as caught:
        await _collect(llm)
    assert caught.value.retryable


async def test_llm_silence_mid_stream_is_a_timeout(llm: OpenAILLM, server: ScriptedOpenAI) -> None:
    """A stream that stops sending before it is done becomes a ProviderTimeoutError."""
    server.chat.append(ChatReply(text="a b c d", timeline=Timeline(stall_after=2)))
    with pytest.raises(ProviderTimeoutError):
        await _collect(llm)


async def test_llm_dropped_connection_mid_stream_is_a_connection_error(
    llm: OpenAILLM, server: ScriptedOpenAI
) -> None:
    """A connection dropped mid-stream becomes a retryable ProviderConnectionError."""
    server.chat.append(ChatReply(text="a b c d", timeline=Timeline(disconnect_after=2)))
    with pytest.raises(ProviderConnectionError) as caught:
        await _collect(llm)
    assert caught.value.retryable


async def test_llm_unreachable_server_is_a_connection_error() -> None:
    """Nothing listening at the base URL becomes a ProviderConnectionError."""
    connection = OpenAIConnection(api_key="k", base_url=f"http://127.0.0.1:{free_port()}/v1")
    async with OpenAILLM(connection=connection, model="m") as llm:
        with pytest.raises(ProviderConnectionError):
            await _collect(llm)


# STT


async def test_stt_sends_the_segment_as_wav(stt: OpenAISTT, server: ScriptedOpenAI) -> None:
    """The segment goes out as a WAV file of the same samples, with the model and language."""
    await stt.transcribe(SEGMENT, language="de")
    request = server.requests_to(TRANSCRIPTIONS_PATH)[0]
    with wave.open(io.BytesIO(request.files["file"]), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16_000)
        assert wav.readframes(wav.getnframes()) == SEGMENT.data
    assert (request.form["model"], request.form["language"]) == ("gpt-4o-mini-transcribe", "de")


async def test_stt_transcribe_returns_text_language_and_duration(
    stt: OpenAISTT, server: ScriptedOpenAI
) -> None:
    """A plain transcription returns the text, the language asked for and the audio's length."""
    server.transcriptions.append(TranscriptionReply(text=" Book a table. "))
    transcript = await stt.transcribe(SEGMENT, language="en")
    assert (transcript.text, transcript.language, transcript.duration_s) == (
        "Book a table.",
        "en",
        0.5,
    )
    assert "stream" not in server.requests_to(TRANSCRIPTIONS_PATH)[0].form


async def test_stt_streaming_model_yields_interim_text_then_final(
    stt: OpenAISTT, server: ScriptedOpenAI
) -> None:
    """A streaming model sends stream=true and yields growing interim text, then the final."""
    server.transcriptions.append(TranscriptionReply(text="book a table"))
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stt.transcribe_stream(SEGMENT)]
    assert [(e.text, e.is_final) for e in events] == [
        ("book", False),
        ("book a", False),
        ("book a table", False),
        ("book a table", True),
    ]
    assert events[-1].transcript is not None
    assert events[-1].transcript.duration_s == 0.5
    assert server.requests_to(TRANSCRIPTIONS_PATH)[0].form["stream"] == "true"


async def test_stt_whisper_model_does_not_stream(
    connection: OpenAIConnection, server: ScriptedOpenAI
) -> None:
    """whisper-1 declares no streaming; transcribe_stream makes one plain request."""
    server.transcriptions.append(TranscriptionReply(text="book a table"))
    async with OpenAISTT(connection=connection, model="whisper-1") as stt:
        assert not stt.capabilities.streaming
        events = [e async for e in stt.transcribe_stream(SEGMENT)]
    assert [(e.text, e.is_final) for e in events] == [("book a table", True)]
    assert "stream" not in server.requests_to(TRANSCRIPTIONS_PATH)[0].form


async def test_stt_asks_a_gpt_4o_model_for_logprobs_and_scores_the_words(
    stt: OpenAISTT, server: ScriptedOpenAI
) -> None:
    """A gpt-4o transcription model is asked for logprobs; the transcript's confidence is their
    geometric mean, in one piece and streamed."""
    server.transcriptions.append(TranscriptionReply(text="my account number is", confidence=0.4))
    server.transcriptions.append(TranscriptionReply(text="book a table", confidence=0.9))
    transcript = await stt.transcribe(SEGMENT)
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stt.transcribe_stream(SEGMENT)]
    streamed = events[-1].transcript
    assert transcript.confidence == pytest.approx(0.4)
    assert streamed is not None
    assert streamed.confidence == pytest.approx(0.9)
    requests = server.requests_to(TRANSCRIPTIONS_PATH)
    assert [r.form.get("include[]") for r in requests] == ["logprobs", "logprobs"]


async def test_stt_whisper_model_is_not_asked_for_logprobs(
    connection: OpenAIConnection, server: ScriptedOpenAI
) -> None:
    """whisper-1 refuses `include`; it is not sent, and the transcript carries no score."""
    server.transcriptions.append(TranscriptionReply(text="book a table", confidence=0.3))
    async with OpenAISTT(connection=connection, model="whisper-1") as stt:
        transcript = await stt.transcribe(SEGMENT)
    assert transcript.confidence is None
    form = server.requests_to(TRANSCRIPTIONS_PATH)[0].form
    assert "include[]" not in form
    assert "include" not in form


def test_stt_confidence_is_the_geometric_mean_of_the_token_probabilities() -> None:
    """exp(mean logprob); tokens without a logprob are skipped; none at all gives None."""
    tokens = [Logprob(token="a", logprob=math.log(0.5)), Logprob(token="b", logprob=math.log(0.8))]
    assert confidence_of(tokens) == pytest.approx(math.sqrt(0.5 * 0.8))
    assert confidence_of([*tokens, Logprob(token="c")]) == pytest.approx(math.sqrt(0.4))
    assert confidence_of([Logprob(token="c")]) is None
    assert confidence_of(None) is None
    assert confidence_of([Logprob(token="d", logprob=0.2)]) == 1.0  # a rounding above 0 caps


async def test_stt_server_error_is_a_retryable_response_error(
    stt: OpenAISTT, server: ScriptedOpenAI
) -> None:
    """HTTP 500 on a transcription becomes a retryable ProviderResponseError."""
    server.transcriptions.append(ErrorReply(500))
    with pytest.raises(ProviderResponseError) as caught:
        await stt.transcribe(SEGMENT)
    assert (caught.value.status, caught.value.retryable, caught.value.provider) == (
        500,
        True,
        "openai.stt",
    )


async def test_stt_no_answer_is_a_timeout(stt: OpenAISTT, server: ScriptedOpenAI) -> None:
    """A transcription that never answers becomes a ProviderTimeoutError."""
    server.transcriptions.append(Hang())
    with pytest.raises(ProviderTimeoutError):
        await stt.transcribe(SEGMENT)


async def test_stt_stream_silence_is_a_timeout(stt: OpenAISTT, server: ScriptedOpenAI) -> None:
    """A transcript stream that stops before its final event becomes a ProviderTimeoutError."""
    server.transcriptions.append(
        TranscriptionReply(text="book a table", timeline=Timeline(stall_after=1))
    )
    with pytest.raises(ProviderTimeoutError):
        _ = [e async for e in stt.transcribe_stream(SEGMENT)]


# TTS


async def test_tts_streams_the_servers_pcm_at_24khz(tts: OpenAITTS, server: ScriptedOpenAI) -> None:
    """Chunks are 24 kHz PCM that join into exactly the audio the server sent."""
    text = "Your table is booked."
    async with asyncio.timeout(GUARD_S):
        chunks = [c async for c in tts.synthesize(text)]
    assert {c.sample_rate for c in chunks} == {SPEECH_SAMPLE_RATE}
    assert tts.capabilities.sample_rate == SPEECH_SAMPLE_RATE
    assert b"".join(c.data for c in chunks) == tone(
        speech_duration_s(text), sample_rate=SPEECH_SAMPLE_RATE
    )


async def test_tts_requests_raw_pcm_with_model_and_voice(
    tts: OpenAITTS, server: ScriptedOpenAI
) -> None:
    """The speech request names the model, the voice, the text and response_format pcm."""
    _ = [c async for c in tts.synthesize("Hello.")]
    body = server.requests_to(SPEECH_PATH)[0].json
    assert body == {
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "input": "Hello.",
        "response_format": "pcm",
    }


async def test_tts_holds_back_an_odd_byte_until_its_pair_arrives(
    tts: OpenAITTS, server: ScriptedOpenAI
) -> None:
    """An odd-sized network chunk yields its whole samples at once; the odd byte waits."""
    resume = asyncio.Event()
    timeline = Timeline(stall_after=1, resume=resume)
    server.speech.append(SpeechReply(duration_s=0.1, chunk_bytes=1001, timeline=timeline))
    async with asyncio.timeout(GUARD_S), aclosing(tts.synthesize("Hi.")) as stream:
        first = await anext(stream)
        resume.set()
        rest = [c async for c in stream]
    assert len(first.data) == 1000
    assert all(len(c.data) % 2 == 0 for c in rest)
    assert first.data + b"".join(c.data for c in rest) == tone(0.1, sample_rate=SPEECH_SAMPLE_RATE)


async def test_tts_odd_chunk_sizes_keep_every_sample(
    tts: OpenAITTS, server: ScriptedOpenAI
) -> None:
    """With odd-sized chunks throughout, no sample is lost, split or reordered."""
    server.speech.append(SpeechReply(duration_s=0.3, chunk_bytes=777))
    async with asyncio.timeout(GUARD_S):
        chunks = [c async for c in tts.synthesize("Hi.")]
    assert b"".join(c.data for c in chunks) == tone(0.3, sample_rate=SPEECH_SAMPLE_RATE)


async def test_tts_rate_limit_is_a_retryable_response_error(
    tts: OpenAITTS, server: ScriptedOpenAI
) -> None:
    """HTTP 429 on speech becomes a retryable ProviderResponseError with status 429."""
    server.speech.append(ErrorReply(429, type="rate_limit_error"))
    with pytest.raises(ProviderResponseError) as caught:
        _ = [c async for c in tts.synthesize("Hi.")]
    assert (caught.value.status, caught.value.retryable, caught.value.provider) == (
        429,
        True,
        "openai.tts",
    )


async def test_tts_no_answer_is_a_timeout(tts: OpenAITTS, server: ScriptedOpenAI) -> None:
    """Speech that never starts becomes a ProviderTimeoutError."""
    server.speech.append(Hang())
    with pytest.raises(ProviderTimeoutError):
        _ = [c async for c in tts.synthesize("Hi.")]


async def test_tts_silence_mid_stream_is_a_timeout(tts: OpenAITTS, server: ScriptedOpenAI) -> None:
    """An audio stream that goes silent part-way becomes a ProviderTimeoutError."""
    server.speech.append(SpeechReply(duration_s=0.5, timeline=Timeline(stall_after=1)))
    with pytest.raises(ProviderTimeoutError):
        _ = [c async for c in tts.synthesize("Hi.")]


async def test_tts_dropped_connection_mid_stream_is_a_connection_error(
    tts: OpenAITTS, server: ScriptedOpenAI
) -> None:
    """An audio stream whose connection drops part-way becomes a ProviderConnectionError."""
    server.speech.append(SpeechReply(duration_s=0.5, timeline=Timeline(disconnect_after=1)))
    with pytest.raises(ProviderConnectionError):
        _ = [c async for c in tts.synthesize("Hi.")]


def test_tool_arguments_stay_a_json_string() -> None:
    """Tool-call arguments are passed on as the JSON text the model wrote, not parsed."""
    call = ToolCall(id="c", name="n", arguments='{"a": 1}')
    assert json.loads(wire_tool_call(call)["function"]["arguments"]) == {"a": 1}


def test_assistant_tool_call_message_sends_empty_content_not_null() -> None:
    """An assistant message with only tool calls sends content "" (llama.cpp 500s on null)."""
    call = ToolCall(id="c1", name="f", arguments="{}")
    wire = dict(wire_message(ChatMessage.assistant(tool_calls=[call])))
    assert wire["content"] == ""
    assert wire["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


def test_tool_message_carries_its_call_id() -> None:
    """A tool result goes out with role tool and the id of the call it answers."""
    assert wire_message(ChatMessage.tool("c1", "42")) == {
        "role": "tool",
        "content": "42",
        "tool_call_id": "c1",
    }
