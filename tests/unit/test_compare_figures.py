"""The side-by-side benchmark's arithmetic: percentiles, ratios, the A B C schedule, density."""

from __future__ import annotations

import math

import pytest

from benchmarks.compare.figures import (
    Batch,
    alternating_batches,
    density,
    holds,
    level_turns,
    percentile,
    ratio,
)
from benchmarks.compare.processes import descendants


def test_percentile_is_the_nearest_rank() -> None:
    """p50 of 1..10 is 5 and p95 is 10, by nearest rank, whatever the input order."""
    values = [7.0, 1.0, 10.0, 3.0, 2.0, 9.0, 4.0, 8.0, 6.0, 5.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 95) == 10.0
    assert percentile(values, 0) == 1.0


def test_percentile_of_nothing_is_nan() -> None:
    """No samples give nan, not an error."""
    assert math.isnan(percentile([], 50))


def test_ratio_of_unknown_or_zero_is_nan() -> None:
    """A ratio is ours over theirs; nan when a side is unknown or theirs is zero."""
    assert ratio(800.0, 1000.0) == pytest.approx(0.8)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_batches_alternate_systems_round_by_round() -> None:
    """Each round gives every system one batch, in the same order, the last carrying the rest."""
    batches = alternating_batches(["a", "b", "c"], turns=7, batch_turns=3)
    assert [b.system for b in batches] == ["a", "b", "c"] * 3
    assert [b.turns for b in batches] == [3] * 6 + [1] * 3


def test_batches_give_every_system_exactly_its_turns() -> None:
    """Summed over the schedule, each system gets exactly the turns asked for."""
    batches = alternating_batches(["ours", "them"], turns=30, batch_turns=4)
    for system in ("ours", "them"):
        assert sum(b.turns for b in batches if b.system == system) == 30
    assert batches[:2] == [Batch("ours", 4), Batch("them", 4)]


def test_batches_refuse_a_batch_of_no_turns() -> None:
    """A batch size below one is a mistake, not an endless loop."""
    with pytest.raises(ValueError, match="batch_turns"):
        alternating_batches(["a"], turns=3, batch_turns=0)


def test_a_level_holds_within_twenty_percent_and_without_failures() -> None:
    """p95 up to 1.2x the lone call's holds; beyond, or with a failed call, it does not."""
    assert holds(1200.0, 1000.0, failed_calls=0)
    assert not holds(1201.0, 1000.0, failed_calls=0)
    assert not holds(900.0, 1000.0, failed_calls=1)
    assert not holds(math.nan, 1000.0, failed_calls=0)


def test_low_levels_speak_more_turns_per_call() -> None:
    """Two calls speak enough turns for a 24-turn p95; busy levels keep the asked-for turns."""
    assert level_turns(2, 2) == 12
    assert level_turns(4, 2) == 6
    assert level_turns(16, 2) == 2


def test_density_stops_at_the_first_level_that_fails() -> None:
    """Density is the highest level below the first failure; a lone call when none held."""
    assert density([(2, True), (4, True), (8, False), (12, True)]) == 4
    assert density([(4, True), (2, True)]) == 4
    assert density([(2, False)]) == 1
    assert density([]) == 1


def test_descendants_collect_the_whole_process_tree() -> None:
    """A worker's children and grandchildren count; a sibling tree does not."""
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(13, parents) == {13}
