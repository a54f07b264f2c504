"""Tool breakers shared by every worker on one Redis: a trip anywhere opens the tool everywhere.

Each worker keeps its own breaker state machine (`breakers.py`) and counts its own failures;
what the workers share are the breakers' decisions:

- a worker whose breaker opens (N failures in a row, or a failed trial) announces it: the tool's
  entry in a Redis hash (for workers that start later) and a pub/sub message (for those running).
  Every other worker opens its breaker with the same `opened_at`, so the cool-down ends
  everywhere at once (give or take the hosts' clock difference);
- after the cool-down, one trial runs in the whole fleet: the worker that takes the trial lock
  (`SET NX` that expires after a cool-down, so a dead worker's lock lapses);
- a successful trial announces the tool closed, and every worker closes its breaker.

Redis is on a tool call's path only to take the trial lock (once per cool-down, with a short
timeout). When Redis is unreachable every worker decides alone, as a per-process breaker would,
and follows the shared state again once Redis is back.

Why not purgatory's own Redis storage: it reads a breaker's state from Redis only when the breaker
object is made, writes a state change as a read-modify-write of one JSON value, lets every worker
run its own half-open trial, and puts Redis (without a timeout) on every tool call's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voice_agent.logging import get_logger

log = get_logger("tooling.breakers")

OnOpen = Callable[[str, float], Awaitable[None]]
OnClosed = Callable[[str], Awaitable[None]]

_PREFIX = "voice_agent:breakers"
# A Redis call on the tool path (the trial lock) waits at most this long before deciding alone.
_REDIS_TIMEOUT_S = 0.5
_RELINK_MAX_DELAY_S = 10.0
_END_TRIAL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class SharedBreakerState:
    """The Redis side of a `BreakerBoard`: announcements, the fleet's open tools, trial locks."""

    def __init__(self, *, url: str, namespace: str, cooldown_s: float) -> None:
        self.worker_id = uuid.uuid4().hex
        self._cooldown_s = cooldown_s
        self._hash = f"{_PREFIX}:{namespace}"
        self._channel = f"{_PREFIX}:{namespace}:events"
        self._trial_prefix = f"{_PREFIX}:{namespace}:trial:"
        timeouts = {"socket_connect_timeout": _REDIS_TIMEOUT_S, "socket_timeout": _REDIS_TIMEOUT_S}
        self._redis = aioredis.from_url(url, **timeouts)  # type: ignore[no-untyped-call]  # redis 5
        # Subscriptions wait for messages indefinitely; a health check notices a dead link.
        self._events = aioredis.from_url(  # type: ignore[no-untyped-call]  # redis 5
            url, socket_connect_timeout=_REDIS_TIMEOUT_S, health_check_interval=5
        )
        self._follower: asyncio.Task[None] | None = None
        self._link_deadline = 0.0
        self._linked = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self._link_down = False

    @property
    def linked(self) -> bool:
        """True while the board follows the fleet's announcements."""
        return self._linked.is_set()

    async def link(self, *, on_open: OnOpen, on_closed: OnClosed, timeout_s: float) -> None:
        """Start following the fleet; calls in the first `timeout_s` wait for its state.

        Later calls return at once, linked or not: a Redis outage never slows a tool call down.
        """
        loop = asyncio.get_running_loop()
        if self._follower is None:
            self._follower = asyncio.create_task(
                self._follow(on_open, on_closed), name="tool-breakers-follow"
            )
            self._link_deadline = loop.time() + timeout_s
        remaining = self._link_deadline - loop.time()
        if self._linked.is_set() or remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self._linked.wait()

    def announce_open(self, tool: str, opened_at: float) -> None:
        """Tell every worker that `tool`'s breaker opened at `opened_at` (in the background)."""
        entry = json.dumps({"opened_at": opened_at, "origin": self.worker_id})
        event = json.dumps(
            {"tool": tool, "state": "open", "opened_at": opened_at, "origin": self.worker_id}
        )

        async def send() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._hash, tool, entry)
                pipe.publish(self._channel, event)
                await pipe.execute()

        self._background("announce_open", send)

    def announce_closed(self, tool: str) -> None:
        """Tell every worker that `tool`'s trial succeeded and its breaker closed."""
        event = json.dumps({"tool": tool, "state": "closed", "origin": self.worker_id})

        async def send() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._hash, tool)
                pipe.publish(self._channel, event)
                await pipe.execute()

        self._background("announce_closed", send)

    async def take_trial(self, tool: str) -> bool:
        """True when this worker may run `tool`'s half-open trial (or Redis cannot say)."""
        ttl_ms = max(int(self._cooldown_s * 1000), 1)
        try:
            taken = await self._redis.set(
                self._trial_prefix + tool, self.worker_id, nx=True, px=ttl_ms
            )
        except (RedisError, OSError) as e:
            self._link_lost("take_trial", e)
            return True
        return bool(taken)

    def end_trial(self, tool: str) -> None:
        """Give the trial lock back (if still ours), so the next trial need not wait for it."""

        async def send() -> None:
            await self._redis.eval(_END_TRIAL, 1, self._trial_prefix + tool, self.worker_id)

        self._background("end_trial", send)

    async def aclose(self) -> None:
        """Send what is queued (briefly), stop following, close the connections."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=_REDIS_TIMEOUT_S * 2)
        for task in (*self._pending, self._follower):
            if task is not None:
                task.cancel()
        tasks = [t for t in (*self._pending, self._follower) if t is not None]
        if tasks:
            await asyncio.wait(tasks)
        await self._redis.aclose()
        await self._events.aclose()

    def _background(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await send()
            except (RedisError, OSError) as e:
                self._link_lost(what, e)

        task = asyncio.create_task(run(), name=f"tool-breakers-{what}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _link_lost(self, what: str, error: BaseException) -> None:
        if not self._link_down:  # once per outage, not once per tool call
            self._link_down = True
            log.warning("tool.breaker_link_lost", operation=what, error=str(error))

    async def _follow(self, on_open: OnOpen, on_closed: OnClosed) -> None:
        """Apply the fleet's announcements until cancelled, relinking after Redis faults."""
        attempt = 0
        while True:
            pubsub = self._events.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                await self._load(on_open)  # after subscribing, so no announcement falls between
                self._linked.set()
                if self._link_down:
                    self._link_down = False
                    log.info("tool.breaker_link_restored")
                attempt = 0
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._apply(message.get("data"), on_open, on_closed)
            except (RedisError, OSError) as e:
                self._linked.clear()
                self._link_lost("follow", e)
                attempt += 1
                await asyncio.sleep(min(0.25 * 2**attempt, _RELINK_MAX_DELAY_S))
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _load(self, on_open: OnOpen) -> None:
        """Open the tools the fleet has open now (announced before this worker was listening)."""
        entries: dict[bytes, bytes] = await self._events.hgetall(self._hash)
        now = time.time()
        for tool, raw in entries.items():
            entry = _parse(raw)
            opened_at = entry.get("opened_at") if entry else None
            if isinstance(opened_at, int | float) and opened_at + self._cooldown_s > now:
                await on_open(tool.decode(), float(opened_at))

    async def _apply(self, data: Any, on_open: OnOpen, on_closed: OnClosed) -> None:
        event = _parse(data)
        if event is None or event.get("origin") == self.worker_id:
            return
        tool, state = event.get("tool"), event.get("state")
        if not isinstance(tool, str):
            return
        opened_at = event.get("opened_at")
        if state == "open" and isinstance(opened_at, int | float):
            await on_open(tool, float(opened_at))
        elif state == "closed":
            await on_closed(tool)


def _parse(raw: Any) -> dict[str, Any] | None:
    """A JSON object from Redis, or None for anything else (another program's data)."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
