"""What a worker's calls share: the fixed lines (rendered once) and loaded VAD models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voice_agent.agent.lines import LineName, SpokenLines
from voice_agent.exceptions import ProviderError
from voice_agent.pipeline.vad_model import SileroModelPool, SileroVadModel
from voice_agent.providers.fake import FakeSpeech, FakeTimeline, FakeTTS

TEXTS = {LineName.FALLBACK: "Sorry, say that again?", LineName.GOODBYE: "Goodbye!"}


async def test_concurrent_calls_render_each_line_once() -> None:
    """Ten calls starting together ask TTS for each line once; all of them get the audio."""
    slow = FakeSpeech(timeline=FakeTimeline(first_delay_s=0.05))
    tts = FakeTTS(default=slow)
    lines = SpokenLines(texts=TEXTS)

    await asyncio.gather(*(lines.synthesize(tts, timeout_s=5) for _ in range(10)))

    assert sorted(call.text for call in tts.calls) == sorted(TEXTS.values())
    assert set(lines.audio) == set(TEXTS)
    assert all(len(pcm) > 0 for pcm in lines.audio.values())


async def test_a_line_that_failed_is_tried_again_by_the_next_call() -> None:
    """TTS down for the first call: that line stays missing, and the next call renders it
    without asking again for the line that worked."""
    down = FakeSpeech(
        timeline=FakeTimeline(error=ProviderError("tts down", provider="fake"), fail_after=0)
    )
    tts = FakeTTS([down, FakeSpeech()], default=FakeSpeech())
    lines = SpokenLines(texts=TEXTS)

    await lines.synthesize(tts, timeout_s=5)
    assert set(lines.audio) == {LineName.GOODBYE}

    await lines.synthesize(tts, timeout_s=5)
    assert set(lines.audio) == set(TEXTS)
    assert [call.text for call in tts.calls] == [
        TEXTS[LineName.FALLBACK],
        TEXTS[LineName.GOODBYE],
        TEXTS[LineName.FALLBACK],
    ]


def _speechlike(seconds: float) -> np.ndarray:
    """Noise shaped like syllables: enough to move Silero's recurrent state."""
    rng = np.random.default_rng(7)
    t = np.arange(round(seconds * 16_000)) / 16_000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (rng.normal(0, 0.3, t.size) * envelope).astype(np.float32)


def _scores(model: SileroVadModel, audio: np.ndarray) -> list[float]:
    w = model.window_samples
    return [model.probability(audio[i : i + w]) for i in range(0, audio.size - w + 1, w)]


async def test_a_reused_model_scores_like_a_fresh_one() -> None:
    """A model back from one call carries nothing of that call into the next."""
    pool = SileroModelPool(keep=4)
    probe = _speechlike(1.0)
    fresh = _scores(SileroVadModel(), probe)

    model = await pool.acquire()
    _scores(model, _speechlike(2.0)[::-1].copy())  # a previous call's audio
    pool.release(model)
    again = await pool.acquire()

    assert again is model
    assert _scores(again, probe) == pytest.approx(fresh, abs=1e-6)


async def test_the_pool_prewarms_and_keeps_at_most_its_bound() -> None:
    pool = SileroModelPool(keep=2)
    await pool.prewarm(5)
    assert pool.idle == 2

    models = [await pool.acquire() for _ in range(3)]  # the third is loaded on demand
    assert pool.idle == 0
    assert len({id(m) for m in models}) == 3
    for model in models:
        pool.release(model)
    assert pool.idle == 2
