"""ArrivalClock: stream positions to moments, independent of the frame size."""

from __future__ import annotations

import pytest

from voice_agent.agent.arrival_clock import ArrivalClock


def test_a_sample_is_back_dated_by_the_audio_after_it_in_its_chunk() -> None:
    clock = ArrivalClock(sample_rate=16_000)
    clock.mark(1024, at=10.064)  # a 64 ms chunk, complete at 10.064
    clock.mark(2048, at=10.128)
    assert clock.at(1023) == pytest.approx(10.064)  # the chunk's last sample
    assert clock.at(0) == pytest.approx(10.064 - 1023 / 16_000)
    assert clock.at(1024) == pytest.approx(10.128 - 1023 / 16_000)


@pytest.mark.parametrize("frame", [320, 640, 1024, 1600])
def test_the_frame_size_does_not_move_a_moment(frame: int) -> None:
    """Audio delivered in real time: sample 5000 is heard at 5000/16000 s, whatever the frames."""
    clock = ArrivalClock(sample_rate=16_000)
    for end in range(frame, 16_000 + 1, frame):
        clock.mark(end, at=end / 16_000)
    assert clock.at(4999) == pytest.approx(5000 / 16_000, abs=1e-9)


def test_a_burst_of_late_chunks_keeps_each_within_its_chunk() -> None:
    """Three chunks arriving together after a stall map to the burst, not to the past."""
    clock = ArrivalClock(sample_rate=16_000)
    for end in (640, 1280, 1920):
        clock.mark(end, at=5.0)
    assert 5.0 - 0.04 <= clock.at(700) <= 5.0
    with pytest.raises(LookupError):
        ArrivalClock(sample_rate=16_000).at(0)
