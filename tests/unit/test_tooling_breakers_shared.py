"""Tool breakers shared through a real Redis: one worker's trip opens the tool in every worker."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from tests.helpers import make_settings
from voice_agent.devstack.processes import free_port
from voice_agent.metrics import WORKER_REGISTRY
from voice_agent.tooling import BreakerBoard
from voice_agent.tooling.shared_breakers import SharedBreakerState

STEP_S = 10.0


async def eventually(predicate: Callable[[], bool], timeout_s: float = STEP_S) -> None:
    """Wait until `predicate()` holds, polling, for at most `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # another worker's announcement, or a clock
            await asyncio.sleep(0.01)


def linked_board(
    redis_url: str, namespace: str, *, failures: int = 2, cooldown_s: float = 30.0
) -> BreakerBoard:
    """A board standing for one worker process, sharing `namespace` on Redis."""
    shared = SharedBreakerState(url=redis_url, namespace=namespace, cooldown_s=cooldown_s)
    return BreakerBoard(failures=failures, cooldown_s=cooldown_s, shared=shared)


@asynccontextmanager
async def workers(
    redis_url: str,
    count: int,
    *,
    namespace: str | None = None,
    failures: int = 2,
    cooldown_s: float = 30.0,
) -> AsyncIterator[list[BreakerBoard]]:
    """`count` boards standing for `count` worker processes on one Redis, each linked."""
    namespace = namespace or f"test-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        boards = []
        for _ in range(count):
            board = linked_board(redis_url, namespace, failures=failures, cooldown_s=cooldown_s)
            stack.push_async_callback(board.aclose)
            assert await board.admit("warm-up") is not None  # links to Redis on first use
            boards.append(board)
        yield boards


async def fail(board: BreakerBoard, tool: str, times: int) -> None:
    for _ in range(times):
        admitted = await board.admit(tool)
        assert admitted is not None
        await admitted.failed(ConnectionError("down"))


async def test_a_breaker_opened_in_one_worker_opens_in_the_others(redis_url: str) -> None:
    """N failures in one worker open the tool's breaker in every worker on the same Redis."""
    async with workers(redis_url, 3) as (a, b, c):
        await fail(a, "orders", 2)
        assert a.state("orders") == "open"
        await eventually(lambda: b.state("orders") == c.state("orders") == "open")
        assert await b.admit("orders") is None
        assert b.state("other-tool") == "closed"


async def test_a_worker_started_during_a_cool_down_finds_the_breaker_open(
    redis_url: str,
) -> None:
    """A worker that starts after the trip learns it from Redis before its first tool call."""
    namespace = f"test-{secrets.token_hex(4)}"
    async with workers(redis_url, 2, namespace=namespace) as (a, b):
        await fail(a, "orders", 2)
        # b heard it, so the announcement (hash entry and message, one transaction) is in Redis.
        await eventually(lambda: b.state("orders") == "open")
        async with workers(redis_url, 1, namespace=namespace) as (later,):
            assert later.state("orders") == "open"
            assert await later.admit("orders") is None


async def test_one_trial_runs_in_the_whole_fleet_and_its_success_closes_every_breaker(
    redis_url: str,
) -> None:
    """After the cool-down one worker runs the trial; the others wait; success closes them all."""
    async with workers(redis_url, 2, failures=1, cooldown_s=0.3) as (a, b):
        await fail(a, "orders", 1)
        await eventually(lambda: b.state("orders") == "open")
        await eventually(lambda: a.state("orders") == b.state("orders") == "half_open")
        trial = await a.admit("orders")
        assert trial is not None
        assert trial.probe
        assert await b.admit("orders") is None  # a holds the fleet's trial
        await trial.succeeded()
        await eventually(lambda: b.state("orders") == "closed")
        assert await b.admit("orders") is not None


async def test_a_failed_trial_restarts_the_cool_down_everywhere(redis_url: str) -> None:
    """The trial failing in one worker reopens the breaker in the others for a new cool-down."""
    async with workers(redis_url, 2, failures=1, cooldown_s=0.5) as (a, b):
        await fail(a, "orders", 1)
        await eventually(lambda: a.state("orders") == b.state("orders") == "half_open")
        trial = await b.admit("orders")
        assert trial is not None
        assert trial.probe
        reopened = time.time()
        await trial.failed(TimeoutError())
        await eventually(lambda: a.state("orders") == "open")
        assert await a.admit("orders") is None
        await eventually(lambda: a.state("orders") == "half_open")
        assert time.time() - reopened >= 0.45  # the new cool-down, not what was left of the old


async def test_breakers_decide_alone_when_redis_is_unreachable() -> None:
    """With Redis down a board works as a per-process breaker, and no tool call waits long."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    board = BreakerBoard(
        failures=1,
        cooldown_s=0.2,
        shared=SharedBreakerState(url=url, namespace="unreachable", cooldown_s=0.2),
    )
    try:
        started = time.monotonic()
        await fail(board, "orders", 1)
        assert board.state("orders") == "open"
        assert await board.admit("orders") is None
        await eventually(lambda: board.state("orders") == "half_open")
        trial = await board.admit("orders")
        assert trial is not None
        assert trial.probe  # Redis cannot say: this worker runs it
        await trial.succeeded()
        assert board.state("orders") == "closed"
        assert time.monotonic() - started < 5.0
    finally:
        await board.aclose()


async def test_breaker_metrics_name_their_scope(redis_url: str) -> None:
    """The open gauge carries scope=shared with Redis and scope=process without."""
    tool = f"metric-tool-{secrets.token_hex(3)}"
    local = BreakerBoard.from_settings(make_settings(tool_breaker_failures=1))
    assert local.scope == "process"
    await fail(local, tool, 1)
    async with workers(redis_url, 2, failures=1) as (a, b):
        await fail(a, tool, 1)
        await eventually(lambda: b.state(tool) == "open")

    def gauge(scope: str) -> float | None:
        labels = {"tool": tool, "scope": scope}
        return WORKER_REGISTRY.get_sample_value("voice_agent_tool_breaker_open", labels)

    def shared_opens(origin: str) -> float | None:
        labels = {"tool": tool, "state": "open", "scope": "shared", "origin": origin}
        name = "voice_agent_tool_breaker_transitions_total"
        return WORKER_REGISTRY.get_sample_value(name, labels)

    assert gauge("process") == 1.0
    assert gauge("shared") == 1.0
    assert shared_opens("local") == 1.0
    assert shared_opens("shared") == 1.0


def test_a_board_is_shared_exactly_when_redis_is_configured() -> None:
    """From settings: REDIS_URL set means a shared board under the agent's name."""
    shared = BreakerBoard.from_settings(make_settings(redis_url="redis://127.0.0.1:1/0"))
    assert shared.scope == "shared"
    assert BreakerBoard.from_settings(make_settings()).scope == "process"
