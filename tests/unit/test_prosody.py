"""How speech ends in pitch: YIN's contour on tones of known pitch, and the fall at the end."""

from __future__ import annotations

import numpy as np
import pytest

from voice_agent.pipeline.prosody import SAMPLE_RATE, final_pitch, pitch_track


def _voice(f0: np.ndarray, level: float = 9000.0) -> bytes:
    """A voiced sound on the contour `f0` (Hz per sample): a fundamental and two harmonics."""
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    wave = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    return (level * wave / 1.75).astype(np.int16).tobytes()


def _glide(start_hz: float, end_hz: float, seconds: float = 1.2) -> bytes:
    """A steady voice at `start_hz` that glides to `end_hz` over its last 300 ms."""
    n, tail = int(SAMPLE_RATE * seconds), int(SAMPLE_RATE * 0.3)
    f0 = np.full(n, start_hz)
    f0[-tail:] = np.geomspace(start_hz, end_hz, tail)
    return _voice(f0)


@pytest.mark.parametrize("hz", [65.0, 110.0, 180.0, 260.0, 380.0])
def test_the_pitch_of_a_steady_voice_is_found_within_a_percent(hz: float) -> None:
    """Male to child voices: the median of the voiced frames is the fundamental, not an octave
    above or below it."""
    f0 = pitch_track(_voice(np.full(SAMPLE_RATE, hz)))
    assert f0.size > 0
    assert np.isnan(f0).mean() < 0.05
    assert float(np.nanmedian(f0)) == pytest.approx(hz, rel=0.01)


def test_silence_and_noise_have_no_pitch() -> None:
    """Unvoiced sound is NaN, and too little voiced speech says nothing."""
    noise = np.random.default_rng(5).normal(0, 3000, SAMPLE_RATE).astype(np.int16).tobytes()
    assert np.isnan(pitch_track(noise)).all()
    assert final_pitch(noise) is None
    assert final_pitch(b"\0\0" * SAMPLE_RATE) is None
    assert final_pitch(_voice(np.full(SAMPLE_RATE // 10, 150.0))) is None  # 100 ms
    assert pitch_track(b"").size == 0


def test_a_final_fall_is_heard_as_one() -> None:
    """A statement's close: the voice drops four semitones over its last 300 ms (the last
    frames' windows end 40 ms before the sound does, so most of that drop is measured)."""
    ending = final_pitch(_glide(160.0, 160.0 * 2 ** (-4 / 12)))
    assert ending is not None
    assert -4.2 < ending.end_st < -2.5
    assert ending.falls


@pytest.mark.parametrize(
    "end_hz", [160.0, 160.0 * 2 ** (3 / 12), 160.0 * 2 ** (-0.5 / 12)], ids=["level", "rise", "dip"]
)
def test_a_level_or_rising_end_is_no_fall(end_hz: float) -> None:
    """A list item or a clause that goes on: level, rising, or barely lower at the end."""
    ending = final_pitch(_glide(160.0, end_hz))
    assert ending is not None
    assert not ending.falls


def test_the_fall_is_measured_against_the_speakers_own_range() -> None:
    """A voice that moves a lot (low 10th percentile far below its median) must come down
    further than a monotone one for its end to count as a fall."""
    n = SAMPLE_RATE * 2
    lively = 160.0 * 2 ** (5 * np.sin(np.linspace(0, 6 * np.pi, n)) / 12)
    lively[-SAMPLE_RATE // 10 :] = 160.0 * 2 ** (-1.5 / 12)  # ends 1.5 st under the median
    ending = final_pitch(_voice(lively))
    assert ending is not None
    assert ending.low_st < -4
    assert not ending.falls
