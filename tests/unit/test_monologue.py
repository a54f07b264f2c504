"""A ten-minute monologue: the listener's memory stays bounded and STT gets a bounded segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.unit.test_vad import _espeak
from voice_agent.pipeline.vad import VadEventType, VoiceActivityDetector
from voice_agent.pipeline.vad_model import SAMPLE_RATE


def test_ten_minutes_of_speech_keep_memory_and_segment_bounded(tmp_path: Path) -> None:
    """Ten minutes without a pause: one segment at the end, holding at most the last minute."""
    sentence = _espeak(
        "and then I told them about the invoice and the refund again", tmp_path / "s.wav"
    )
    voiced = np.nonzero(np.abs(sentence) > 300)[0]
    sentence = sentence[voiced[0] : voiced[-1]]  # no silence between repetitions
    vad = VoiceActivityDetector()
    total = 10 * 60 * SAMPLE_RATE
    fed, events, largest_buffer = 0, [], 0
    chunk = sentence.tobytes()
    while fed < total:
        events += vad.push(chunk)
        fed += len(sentence)
        largest_buffer = max(largest_buffer, len(vad._audio))  # the bound under test
    events += vad.flush()
    ends = [e for e in events if e.type is VadEventType.SPEECH_END]
    limit = vad.config.max_segment_ms / 1000
    assert fed / SAMPLE_RATE >= 600
    assert largest_buffer <= (limit + 1) * SAMPLE_RATE * 2
    assert ends
    assert max(e.audio_duration_s for e in ends) <= limit + 0.5
