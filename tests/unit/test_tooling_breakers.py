"""Per-tool circuit breakers: open after N failures, one trial at a time when half-open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voice_agent.tooling import BreakerBoard


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `predicate()` holds, polling, for at most `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # a breaker's cool-down is a clock, not an event
            await asyncio.sleep(0.01)


async def _fail(board: BreakerBoard, tool: str, times: int) -> None:
    for _ in range(times):
        admitted = await board.admit(tool)
        assert admitted is not None
        await admitted.failed(ConnectionError("down"))


async def test_breaker_opens_after_consecutive_failures_only() -> None:
    """A success between failures resets the count; N in a row open it."""
    board = BreakerBoard(failures=2, cooldown_s=30)
    await _fail(board, "t", 1)
    admitted = await board.admit("t")
    assert admitted is not None
    await admitted.succeeded()
    await _fail(board, "t", 1)
    assert board.state("t") == "closed"
    await _fail(board, "t", 1)
    assert board.state("t") == "open"
    assert await board.admit("t") is None


async def test_breakers_are_per_tool() -> None:
    """One tool's failures do not block another."""
    board = BreakerBoard(failures=1, cooldown_s=30)
    await _fail(board, "a", 1)
    assert board.state("a") == "open"
    assert board.state("b") == "closed"
    assert await board.admit("b") is not None


async def test_half_open_admits_one_trial_at_a_time() -> None:
    """After the cool-down exactly one trial runs; others see the breaker open until it ends."""
    board = BreakerBoard(failures=1, cooldown_s=0.2)
    await _fail(board, "t", 1)
    await eventually(lambda: board.state("t") == "half_open")
    trial = await board.admit("t")
    assert trial is not None
    assert trial.probe
    assert await board.admit("t") is None
    await trial.succeeded()
    assert board.state("t") == "closed"
    assert await board.admit("t") is not None


async def test_a_failed_trial_reopens_the_breaker() -> None:
    """The half-open trial failing opens the breaker for another cool-down."""
    board = BreakerBoard(failures=1, cooldown_s=0.2)
    await _fail(board, "t", 1)
    await eventually(lambda: board.state("t") == "half_open")
    trial = await board.admit("t")
    assert trial is not None
    await trial.failed(TimeoutError())
    assert board.state("t") == "open"
    assert await board.admit("t") is None


async def test_a_released_trial_lets_the_next_request_try() -> None:
    """A trial that ended without an answer (declined, cancelled) records nothing."""
    board = BreakerBoard(failures=1, cooldown_s=0.2)
    await _fail(board, "t", 1)
    await eventually(lambda: board.state("t") == "half_open")
    trial = await board.admit("t")
    assert trial is not None
    trial.release()
    assert board.state("t") == "half_open"
    assert await board.admit("t") is not None


async def test_settling_twice_counts_once() -> None:
    """A pass settles once; later calls do nothing."""
    board = BreakerBoard(failures=2, cooldown_s=30)
    admitted = await board.admit("t")
    assert admitted is not None
    await admitted.failed(ConnectionError())
    await admitted.failed(ConnectionError())
    assert board.state("t") == "closed"
