"""The provider fakes: scripted results and timelines, recorded calls, honest contracts."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ProviderResponseError, ProviderTimeoutError
from voice_agent.providers.base import PcmAudio, Usage
from voice_agent.providers.fake import (
    CallOutcome,
    FakeCompletion,
    FakeLLM,
    FakeSpeech,
    FakeSTT,
    FakeTimeline,
    FakeTranscription,
    FakeTTS,
    ScriptExhaustedError,
)
from voice_agent.testing import speech_duration_s, tone

GUARD_S = 5.0  # an upper bound that only a broken fake reaches
SEGMENT = PcmAudio(data=bytes(3200), sample_rate=16_000)
HI = [ChatMessage.user("hi there")]


async def _texts(llm: FakeLLM) -> list[str]:
    async with asyncio.timeout(GUARD_S):
        return [d.text async for d in llm.stream(HI)]


# LLM


async def test_llm_streams_scripted_words_then_a_closing_delta() -> None:
    """A str is streamed word by word (spaces kept), then a delta with no text closes it."""
    llm = FakeLLM([FakeCompletion(text="It is sunny.")])
    assert await _texts(llm) == ["It", " is", " sunny.", ""]


async def test_llm_closing_delta_carries_tool_calls_usage_and_finish() -> None:
    """Scripted tool calls and usage arrive in the last delta, with finish reason tool_calls."""
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    llm = FakeLLM([FakeCompletion(tool_calls=[call], usage=Usage(7, 3))])
    async with asyncio.timeout(GUARD_S):
        deltas = [d async for d in llm.stream(HI)]
    assert (deltas[-1].tool_calls, deltas[-1].usage, deltas[-1].finish_reason) == (
        (call,),
        Usage(7, 3),
        "tool_calls",
    )


async def test_llm_counts_usage_when_none_is_scripted() -> None:
    """Without scripted usage, prompt words and completion pieces are counted."""
    llm = FakeLLM([FakeCompletion(text=["a", "b"])])
    async with asyncio.timeout(GUARD_S):
        deltas = [d async for d in llm.stream(HI)]
    assert deltas[-1].usage == Usage(prompt_tokens=2, completion_tokens=2)


async def test_llm_records_messages_and_tools() -> None:
    """Each call is recorded with the messages and tools it was given."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    llm = FakeLLM([FakeCompletion(text="ok")])
    async with asyncio.timeout(GUARD_S):
        _ = [d async for d in llm.stream(HI, tools=tools)]
    assert (llm.calls[0].messages, llm.calls[0].tools) == (HI, tools)
    assert llm.calls[0].outcome is CallOutcome.COMPLETED


async def test_llm_answers_calls_in_script_order() -> None:
    """Successive calls get successive scripted completions."""
    llm = FakeLLM([FakeCompletion(text="one"), FakeCompletion(text="two")])
    assert (await _texts(llm))[0] == "one"
    assert (await _texts(llm))[0] == "two"


async def test_llm_with_exhausted_script_fails_loudly() -> None:
    """A call beyond the script raises ScriptExhaustedError, naming the call."""
    llm = FakeLLM([])
    with pytest.raises(ScriptExhaustedError, match="call 1"):
        await _texts(llm)


async def test_llm_default_answers_calls_beyond_the_script() -> None:
    """A default completion answers every call once the script has run out."""
    llm = FakeLLM(default=FakeCompletion(text="again"))
    assert await _texts(llm) == await _texts(llm) == ["again", ""]


async def test_llm_injected_error_comes_after_the_scripted_pieces() -> None:
    """An injected error is raised after `fail_after` pieces, and the call is marked failed."""
    error = ProviderTimeoutError("scripted", provider="fake.llm")
    timeline = FakeTimeline(error=error, fail_after=2)
    llm = FakeLLM([FakeCompletion(text="a b c", timeline=timeline)])
    received: list[str] = []

    async def consume() -> None:
        async for delta in llm.stream(HI):
            received.append(delta.text)

    with pytest.raises(ProviderTimeoutError):
        await consume()
    assert received == ["a", " b"]
    assert llm.calls[0].outcome is CallOutcome.FAILED


async def test_llm_stall_holds_pieces_until_resumed() -> None:
    """After `stall_after` pieces nothing comes until `resume` is set."""
    resume = asyncio.Event()
    timeline = FakeTimeline(stall_after=1, resume=resume)
    llm = FakeLLM([FakeCompletion(text="a b", timeline=timeline)])
    async with asyncio.timeout(GUARD_S), aclosing(llm.stream(HI)) as stream:
        assert (await anext(stream)).text == "a"
        waiting = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({waiting}, timeout=0.05)  # a stalled fake never finishes
        assert not done
        resume.set()
        assert (await waiting).text == " b"


async def test_llm_cancelled_call_is_recorded_as_cancelled() -> None:
    """A call whose task is cancelled mid-stream (barge-in) is recorded as cancelled."""
    llm = FakeLLM([FakeCompletion(text="a b", timeline=FakeTimeline(stall_after=1))])
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.stream(HI):
            first.set()

    task = asyncio.ensure_future(consume())
    async with asyncio.timeout(GUARD_S):
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert llm.calls[0].outcome is CallOutcome.CANCELLED
    assert llm.calls[0].yielded == 1


async def test_llm_stream_closed_early_is_recorded_as_closed() -> None:
    """A consumer that stops reading and closes the stream leaves the call marked closed."""
    llm = FakeLLM([FakeCompletion(text="a b c")])
    async with aclosing(llm.stream(HI)) as stream:
        await anext(stream)
    assert llm.calls[0].outcome is CallOutcome.CLOSED


async def test_llm_first_delay_postpones_the_first_piece() -> None:
    """The first piece comes no sooner than the scripted first-token delay."""
    llm = FakeLLM([FakeCompletion(text="a", timeline=FakeTimeline(first_delay_s=0.05))])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _texts(llm)
    assert loop.time() - started >= 0.05


async def test_llm_declared_without_tools_refuses_them() -> None:
    """A fake declared without tool calls refuses a request that passes tools."""
    llm = FakeLLM([FakeCompletion()], tool_calls=False)
    with pytest.raises(ValueError, match="tool"):
        _ = [d async for d in llm.stream(HI, tools=[{"type": "function"}])]


async def test_llm_refuses_calls_after_aclose() -> None:
    """A closed fake refuses work, as a closed real provider would."""
    async with FakeLLM([FakeCompletion()]) as llm:
        pass
    assert llm.closed
    with pytest.raises(RuntimeError, match="aclose"):
        await _texts(llm)


# STT


async def test_stt_transcribe_returns_the_scripted_text() -> None:
    """transcribe returns the scripted text, the requested language and the audio's length."""
    stt = FakeSTT([FakeTranscription(text="book a table")])
    transcript = await stt.transcribe(SEGMENT, language="en")
    assert (transcript.text, transcript.language, transcript.duration_s) == (
        "book a table",
        "en",
        0.1,
    )


async def test_stt_records_the_audio_and_language() -> None:
    """Each call is recorded with its audio, language hint and whether it streamed."""
    stt = FakeSTT([FakeTranscription(text="x")])
    await stt.transcribe(SEGMENT, language="fr")
    call = stt.calls[0]
    assert (call.audio, call.language, call.streamed, call.outcome) == (
        SEGMENT,
        "fr",
        False,
        CallOutcome.COMPLETED,
    )


async def test_stt_stream_yields_interim_then_final() -> None:
    """A streaming fake yields the scripted interim texts, then the final transcript."""
    stt = FakeSTT([FakeTranscription(text="book a table", interim=["book", "book a"])])
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stt.transcribe_stream(SEGMENT)]
    assert [(e.text, e.is_final) for e in events] == [
        ("book", False),
        ("book a", False),
        ("book a table", True),
    ]


async def test_stt_without_interim_results_yields_only_the_final() -> None:
    """A fake declared without interim results skips the scripted interim texts."""
    stt = FakeSTT([FakeTranscription(text="yes", interim=["y"])], streaming=False)
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stt.transcribe_stream(SEGMENT)]
    assert [(e.text, e.is_final) for e in events] == [("yes", True)]


async def test_stt_injected_error_fails_the_call() -> None:
    """An injected error is raised by transcribe and the call is marked failed."""
    error = ProviderResponseError("scripted", provider="fake.stt", status=500)
    stt = FakeSTT([FakeTranscription(text="x", timeline=FakeTimeline(error=error))])
    with pytest.raises(ProviderResponseError):
        await stt.transcribe(SEGMENT)
    assert stt.calls[0].outcome is CallOutcome.FAILED


# TTS


async def test_tts_speaks_any_text_as_a_tone_of_its_length() -> None:
    """Unscripted, speech is the tone for the text's speaking time at the declared rate."""
    tts = FakeTTS(sample_rate=16_000)
    async with asyncio.timeout(GUARD_S):
        chunks = [c async for c in tts.synthesize("Your table is booked.")]
    assert {c.sample_rate for c in chunks} == {16_000}
    expected = tone(speech_duration_s("Your table is booked."), sample_rate=16_000)
    assert b"".join(c.data for c in chunks) == expected


async def test_tts_chunks_last_the_scripted_chunk_length() -> None:
    """Every chunk but the last lasts `chunk_ms`."""
    tts = FakeTTS([FakeSpeech(duration_s=0.1, chunk_ms=40)])
    async with asyncio.timeout(GUARD_S):
        chunks = [c async for c in tts.synthesize("Hi.")]
    assert [round(c.duration_s, 3) for c in chunks] == [0.04, 0.04, 0.02]


async def test_tts_records_text_and_pieces_sent() -> None:
    """Each call is recorded with its text and how many chunks it yielded."""
    tts = FakeTTS([FakeSpeech(duration_s=0.1, chunk_ms=50)])
    async with asyncio.timeout(GUARD_S):
        _ = [c async for c in tts.synthesize("Hello.")]
    assert (tts.calls[0].text, tts.calls[0].yielded, tts.calls[0].outcome) == (
        "Hello.",
        2,
        CallOutcome.COMPLETED,
    )


async def test_tts_injected_error_after_the_first_chunk() -> None:
    """An error scripted after one chunk arrives after that chunk, mid-sentence."""
    error = ProviderTimeoutError("scripted", provider="fake.tts")
    timeline = FakeTimeline(error=error, fail_after=1)
    tts = FakeTTS([FakeSpeech(duration_s=0.1, chunk_ms=20, timeline=timeline)])
    chunks: list[object] = []

    async def consume() -> None:
        async for chunk in tts.synthesize("Hello."):
            chunks.append(chunk)

    with pytest.raises(ProviderTimeoutError):
        await consume()
    assert len(chunks) == 1
    assert tts.calls[0].outcome is CallOutcome.FAILED
