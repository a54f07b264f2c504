"""Abuse control for the token endpoint, on the `limits` library.

Why `limits`: it is maintained, async, and the same strategy runs in memory or in Redis, so the
same code serves one process and a fleet. The strategy is its moving window: exact, a timestamp
per request within the window (a few hundred bytes a client at the limits a token endpoint
uses). Its cheaper sliding-window counter approximates the previous window's share and rounds
it down, so right after a window boundary it lets a whole limit's worth through again: with
"1/minute" a second token a second after the first, whenever a minute turns between them.
With `REDIS_URL` set the counters live in Redis (one atomic script per hit), so every
token-service replica counts against the same limit; without it, in this process's memory.

When Redis fails (refused, timed out, erroring), the limiter degrades rather than failing either
way: for `recheck_s` it counts in this process's memory, then asks Redis again. Failing closed
would turn a Redis outage into refusing every new call, which the design forbids (one dependency
failing leaves the rest serving); failing open would leave the endpoint unlimited while Redis is
away. Degraded, each replica enforces the limit on its own: at most N times the limit with N
replicas, for as long as the outage lasts. Entering and leaving that state are logged
(`token.rate_limit_degraded`, `token.rate_limit_restored`) and counted in a metric.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from voice_agent.closing import AsyncClosing
from voice_agent.logging import get_logger
from voice_agent.server import metrics

log = get_logger("token_service")

KEY_PREFIX = "voice_agent:rate_limit"
_SHARED_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class RateLimitDecision:
    """Whether a request may go on and, when not, how long to wait."""

    allowed: bool
    scope: str = ""
    retry_after_s: int = 0


def _limits_uri(redis_url: str) -> str:
    """`REDIS_URL` as the `limits` library names its async Redis storage."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class TokenRateLimiter(AsyncClosing):
    """Limits token requests per client IP and per authenticated identity.

    Shared in Redis when `redis_url` is given (close it with `aclose`), else in memory.
    """

    def __init__(
        self,
        item: RateLimitItem,
        *,
        redis_url: str | None = None,
        timeout_s: float = 0.5,
        recheck_s: float = 5.0,
    ) -> None:
        self._item = item
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._timeout_s = timeout_s
        self._recheck_s = recheck_s
        self._pool: ConnectionPool | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            self._pool = ConnectionPool.from_url(
                redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
            storage = RedisStorage(
                _limits_uri(redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=KEY_PREFIX,
                connection_pool=self._pool,  # type: ignore[arg-type]  # passed on to redis-py
            )
            self._shared = MovingWindowRateLimiter(storage)
        self._degraded_until: float | None = None  # monotonic; None while Redis answers

    @property
    def shared(self) -> bool:
        """True when counters live in Redis (even while degraded to memory for a while)."""
        return self._shared is not None

    @property
    def degraded(self) -> bool:
        """True while Redis failed recently and this process counts on its own."""
        return self._degraded_until is not None

    async def hit(self, scope: str, key: str) -> RateLimitDecision:
        """Count one request for (`scope`, `key`); refuse it when over the limit."""
        if self._shared is not None and (
            self._degraded_until is None or time.monotonic() >= self._degraded_until
        ):
            try:
                async with asyncio.timeout(self._timeout_s):
                    decision = await self._decide(self._shared, scope, key)
            except _SHARED_ERRORS as e:
                self._degrade(e)
            else:
                if self._degraded_until is not None:
                    self._degraded_until = None
                    log.info("token.rate_limit_restored", storage="redis")
                return decision
        return await self._decide(self._local, scope, key)

    def _degrade(self, error: BaseException) -> None:
        if self._degraded_until is None:
            metrics.RATE_LIMIT_DEGRADED.inc()
            log.warning(
                "token.rate_limit_degraded",
                storage="memory",
                recheck_s=self._recheck_s,
                error=f"{type(error).__name__}: {error}"[:300],
            )
        self._degraded_until = time.monotonic() + self._recheck_s

    async def _decide(
        self, limiter: MovingWindowRateLimiter, scope: str, key: str
    ) -> RateLimitDecision:
        if await limiter.hit(self._item, scope, key):
            return RateLimitDecision(allowed=True)
        stats = await limiter.get_window_stats(self._item, scope, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitDecision(allowed=False, scope=scope, retry_after_s=retry_after)

    async def aclose(self) -> None:
        """Close the Redis connections, if any."""
        if self._pool is not None:
            await self._pool.aclose()
