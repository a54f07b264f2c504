"""Pure arithmetic of the side-by-side benchmark: percentiles, ratios, the A B C schedule and the
density verdict. No I/O, so each piece has a unit test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# A level holds when its voice-to-voice p95 stays within this factor of a lone call's.
DENSITY_TOLERANCE = 1.2
# A level's p95 is judged on at least this many turns: with 24, the p95 is the second slowest turn,
# so one stray slow model reply on the shared machine does not decide a level alone.
MIN_LEVEL_TURNS = 24


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; nan when either is unknown or theirs is zero."""
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return math.nan
    return ours / theirs


@dataclass(frozen=True)
class Batch:
    """A call of `turns` spoken turns to one system, in the run's order."""

    system: str
    turns: int


def alternating_batches(systems: Sequence[str], turns: int, batch_turns: int) -> list[Batch]:
    """Rounds of one batch per system, A B C A B C ..., until each has `turns` turns; the last
    round carries the remainder. Drift on a shared machine then hits every system alike."""
    if turns < 0 or batch_turns < 1:
        raise ValueError("turns must be >= 0 and batch_turns >= 1")
    batches: list[Batch] = []
    left = turns
    while left > 0:
        size = min(batch_turns, left)
        batches += [Batch(system, size) for system in systems]
        left -= size
    return batches


def level_turns(calls: int, turns: int) -> int:
    """Turns per call at a density level: `turns`, or more so the level has `MIN_LEVEL_TURNS`."""
    return max(turns, math.ceil(MIN_LEVEL_TURNS / max(calls, 1)))


def holds(level_p95: float, lone_p95: float, failed_calls: int) -> bool:
    """Whether a concurrency level holds: no failed call and p95 within the tolerance."""
    if failed_calls or math.isnan(level_p95) or math.isnan(lone_p95):
        return False
    return level_p95 <= DENSITY_TOLERANCE * lone_p95


def density(verdicts: Sequence[tuple[int, bool]]) -> int:
    """The most concurrent calls that held, counting only levels below the first that did not
    (a sweep stops at its first failure); 1 (a lone call) when none held."""
    best = 1
    for calls, held in sorted(verdicts):
        if not held:
            break
        best = max(best, calls)
    return best
