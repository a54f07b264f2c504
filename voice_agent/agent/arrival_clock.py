"""When each stretch of an incoming audio stream arrived, to turn stream positions into moments.

The VAD speaks in sample positions; latency figures need wall-clock moments. A fixed offset
(first arrival minus stream time) drifts whenever the event loop is late or frames arrive in a
burst, so instead the arrival time of every pushed chunk is kept, and a position maps to the
moment the chunk holding it arrived: "when the agent had heard it".
"""

from __future__ import annotations

import bisect


class ArrivalClock:
    """Maps stream sample positions to the monotonic time their audio arrived."""

    def __init__(self, *, keep: int = 6000) -> None:
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
        """When the chunk holding `sample` arrived (clamped to what is still remembered)."""
        if not self._times:
            raise LookupError("no audio has arrived yet")
        i = bisect.bisect_right(self._ends, sample)
        return self._times[min(i, len(self._times) - 1)]
