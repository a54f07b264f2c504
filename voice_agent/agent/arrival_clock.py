"""When each stretch of an incoming audio stream arrived, to turn stream positions into moments.

The VAD speaks in sample positions; latency figures need wall-clock moments. A fixed offset
(first arrival minus stream time) drifts whenever the event loop is late or frames arrive in a
burst, so instead the arrival time of every pushed chunk is kept. A position maps to the moment
its chunk arrived, back-dated by the audio that followed it in the chunk: when the sample would
have arrived had the chunk come sample by sample. Without that, a larger frame would hide up to
a frame of buffering from every latency measured from speech (end of speech, barge-in onset).
"""

from __future__ import annotations

import bisect


class ArrivalClock:
    """Maps stream sample positions to the monotonic time their audio arrived."""

    def __init__(self, *, sample_rate: int, keep: int = 6000) -> None:
        self._rate = sample_rate
        self._ends: list[int] = []  # stream position just after each chunk
        self._times: list[float] = []
        self._keep = keep

    def mark(self, end_sample: int, at: float) -> None:
        """Audio up to (not including) `end_sample` had arrived by `at`."""
        self._ends.append(end_sample)
        self._times.append(at)
        if len(self._ends) > 2 * self._keep:
            del self._ends[: self._keep]
            del self._times[: self._keep]

    def at(self, sample: int) -> float:
        """When `sample` arrived: its chunk's arrival less the audio after it in that chunk
        (clamped to what is still remembered)."""
        if not self._times:
            raise LookupError("no audio has arrived yet")
        i = min(bisect.bisect_right(self._ends, sample), len(self._times) - 1)
        after = max(self._ends[i] - 1 - sample, 0)
        return self._times[i] - after / self._rate
