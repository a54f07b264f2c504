"""Abuse control for the token endpoint, on the `limits` library.

Why `limits`: it is maintained, async, and offers a sliding-window counter that costs O(1) per hit
in memory or Redis, so the same code serves one process and (with a shared storage URL) a fleet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


@dataclass(frozen=True)
class RateLimitDecision:
    """Whether a request may go on and, when not, how long to wait."""

    allowed: bool
    scope: str = ""
    retry_after_s: int = 0


class TokenRateLimiter:
    """Limits token requests per client IP and per authenticated identity."""

    def __init__(self, item: RateLimitItem) -> None:
        self._item = item
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def hit(self, scope: str, key: str) -> RateLimitDecision:
        """Count one request for (`scope`, `key`); refuse it when over the limit."""
        if await self._limiter.hit(self._item, scope, key):
            return RateLimitDecision(allowed=True)
        stats = await self._limiter.get_window_stats(self._item, scope, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitDecision(allowed=False, scope=scope, retry_after_s=retry_after)
