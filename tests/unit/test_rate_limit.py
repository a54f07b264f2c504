"""The token limiter counts exactly: no burst when a window turns (in memory; Redis runs the same
strategy, tests/integration/test_token_rate_limit.py)."""

from __future__ import annotations

import time

import limits
import pytest

from voice_agent.server.rate_limit import TokenRateLimiter


async def test_a_second_token_a_second_later_is_refused_across_a_minute_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "1/minute": a request at 12:00:59.5 and another at 12:01:00.5 are a second apart, so the
    second is refused and told to wait the rest of the minute; a minute after the first it
    passes. (An approximate sliding-window counter, which rounds the previous window's share
    down, would let the second through.)"""
    now = [1_800_000_000.0 - 0.5]  # half a second before a minute boundary
    monkeypatch.setattr(time, "time", lambda: now[0])
    limiter = TokenRateLimiter(limits.parse("1/minute"))
    assert (await limiter.hit("ip", "203.0.113.7")).allowed
    now[0] += 1.0
    refused = await limiter.hit("ip", "203.0.113.7")
    assert not refused.allowed
    assert 58 <= refused.retry_after_s <= 60
    assert (await limiter.hit("ip", "198.51.100.2")).allowed  # another client has its own
    now[0] += 59.5
    assert (await limiter.hit("ip", "203.0.113.7")).allowed


async def test_the_limit_holds_at_every_instant_of_a_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "3/minute" hit every 10 s for two minutes: never more than 3 allowed in any 60 s."""
    now = [1_800_000_000.0 - 25.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    limiter = TokenRateLimiter(limits.parse("3/minute"))
    allowed: list[float] = []
    for _ in range(13):
        if (await limiter.hit("ip", "203.0.113.7")).allowed:
            allowed.append(now[0])
        now[0] += 10.0
    for t in allowed:
        assert sum(t <= u < t + 60 for u in allowed) <= 3
    assert len(allowed) >= 4  # and the limit recovers as the window moves
