"""Where the simulated caller's speech ends: the last voiced audio, not the end of the clip."""

from __future__ import annotations

import numpy as np

from voice_agent.caller.audio import ROOM_RATE, Utterance


def _tone(seconds: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * ROOM_RATE)) / ROOM_RATE
    return (10 ** (dbfs / 20) * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_a_silent_tail_is_not_speech() -> None:
    """A clip of 0.5 s of tone and 1 s of digital silence ends its speech at 0.5 s."""
    pcm = np.concatenate([_tone(0.5, -12), np.zeros(ROOM_RATE, np.int16)]).tobytes()
    end_s = Utterance(label="t", pcm=pcm).speech_end_sample / ROOM_RATE
    assert abs(end_s - 0.5) <= 0.01


def test_a_recordings_noise_floor_is_not_speech() -> None:
    """Noise 50 dB below the speech after it does not extend the speech."""
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(ROOM_RATE) * 32767 * 10 ** (-62 / 20)).astype(np.int16)
    pcm = np.concatenate([_tone(0.8, -10), noise]).tobytes()
    end_s = Utterance(label="t", pcm=pcm).speech_end_sample / ROOM_RATE
    assert abs(end_s - 0.8) <= 0.01


def test_quiet_speech_in_a_quiet_clip_still_counts() -> None:
    """Soft speech (-40 dBFS) is speech: the end is where it stops, not the clip's start."""
    pcm = np.concatenate([_tone(0.3, -40), np.zeros(ROOM_RATE // 2, np.int16)]).tobytes()
    end_s = Utterance(label="t", pcm=pcm).speech_end_sample / ROOM_RATE
    assert abs(end_s - 0.3) <= 0.01


def test_a_clip_without_speech_ends_where_it_ends() -> None:
    """All silence: the whole clip counts (there is no better answer)."""
    pcm = bytes(2 * ROOM_RATE)
    assert Utterance(label="t", pcm=pcm).speech_end_sample == ROOM_RATE
