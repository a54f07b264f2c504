"""Deterministic stand-in speech: a sine tone whose length follows the text it "speaks"."""

from __future__ import annotations

import math
import sys
from array import array

CHARS_PER_SECOND = 15.0  # about the pace of conversational speech
MIN_SPEECH_S = 0.25


def speech_duration_s(text: str) -> float:
    """How long a tone standing in for `text` lasts: ~15 characters a second, at least 0.25 s."""
    return max(MIN_SPEECH_S, len(text.strip()) / CHARS_PER_SECOND)


def tone(
    duration_s: float, *, sample_rate: int, frequency_hz: float = 440.0, amplitude: float = 0.3
) -> bytes:
    """A sine tone as 16-bit little-endian mono PCM, faded in and out over 5 ms."""
    count = round(duration_s * sample_rate)
    fade = min(count // 2, sample_rate // 200)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency_hz / sample_rate
    samples = array("h", bytes(2 * count))
    for i in range(count):
        gain = min(1.0, (i + 1) / fade, (count - i) / fade) if fade else 1.0
        samples[i] = int(peak * gain * math.sin(step * i))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
