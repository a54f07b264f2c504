"""The token rate limit in real Redis: one limit across replicas, and a Redis outage rides out."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from tests.browser.tcp_proxy import CuttableProxy
from tests.helpers import AppClient, make_settings
from voice_agent.server import token_api
from voice_agent.server.app import create_app
from voice_agent.server.rate_limit import KEY_PREFIX, TokenRateLimiter

pytestmark = pytest.mark.integration

RATE_LIMIT_DB = 8  # these tests' own Redis database


async def _fresh_db(redis_url: str) -> str:
    url = f"{redis_url.rsplit('/', 1)[0]}/{RATE_LIMIT_DB}"
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return url


@contextlib.asynccontextmanager
async def _replica(redis_url: str, **overrides: Any) -> AsyncIterator[AppClient]:
    """One token-service replica; callers come from 127.0.0.1, or X-Forwarded-For when set."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        # Hour windows: a minute's boundary falling inside the burst would let the sliding
        # window's weighting admit an extra request now and then.
        "token_rate_limit": "10/hour",
        "trust_forwarded_for": True,
    }
    settings = make_settings(**(values | overrides))
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def _mint(client: AppClient, ip: str) -> int:
    resp = await client.post("/api/voice-token", headers={"X-Forwarded-For": ip})
    await resp.read()
    return resp.status


async def test_two_replicas_on_one_redis_enforce_one_limit(redis_url: str) -> None:
    """10 per window per client across two replicas is 10 tokens in all, not 20."""
    url = await _fresh_db(redis_url)
    ip = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    async with _replica(url) as first, _replica(url) as second:
        statuses = [await _mint(replica, ip) for _ in range(8) for replica in (first, second)]
        other_client = await _mint(first, "198.51.100.7")
    assert statuses.count(200) == 10
    assert statuses[10:] == [429] * 6
    assert other_client == 200  # the limit is per client, not for the whole service
    check = aioredis.Redis.from_url(url)
    try:
        assert await check.keys(f"{KEY_PREFIX}*"), "the counters live in Redis"
    finally:
        await check.aclose()


async def test_redis_outage_degrades_to_a_local_limit_and_recovers(redis_url: str) -> None:
    """Redis gone: tokens are still minted (never a 5xx), limited per replica and logged as
    `token.rate_limit_degraded`; Redis back: the shared limit returns (`..._restored`)."""
    url = await _fresh_db(redis_url)
    redis_port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    async with CuttableProxy(target_port=redis_port) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}/{RATE_LIMIT_DB}"
        settings = make_settings(
            redis_url=proxied, token_rate_limit="3/hour", trust_forwarded_for=True
        )
        app = create_app(settings)
        app[token_api.RATE_LIMITER] = TokenRateLimiter(
            settings.rate_limit_item, redis_url=proxied, timeout_s=0.5, recheck_s=0.2
        )
        async with TestClient(TestServer(app)) as client:
            assert await _mint(client, "192.0.2.1") == 200  # counted in Redis
            await proxy.cut()
            with capture_logs() as logs:
                during = [await _mint(client, "192.0.2.2") for _ in range(5)]
            assert during == [200, 200, 200, 429, 429]  # 3 an hour, counted in this process
            degraded = [e for e in logs if e["event"] == "token.rate_limit_degraded"]
            assert len(degraded) == 1
            assert degraded[0]["storage"] == "memory"
            await proxy.restore()
            deadline = time.monotonic() + 20
            with capture_logs() as logs:
                while not any(e["event"] == "token.rate_limit_restored" for e in logs):
                    assert time.monotonic() < deadline, "the shared limit never came back"
                    await _mint(client, "192.0.2.3")
                    await asyncio.sleep(0.1)
            # Back on Redis: the client counted there before the outage has 2 of 3 left.
            assert [await _mint(client, "192.0.2.1") for _ in range(3)] == [200, 200, 429]


async def test_a_hung_redis_costs_a_bounded_wait_not_a_5xx(redis_url: str) -> None:
    """A Redis that accepts connections and never answers: the limiter gives up after its
    timeout, mints from the local limit and logs the degradation with the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection, answer nothing, until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = f"redis://127.0.0.1:{port}/0"
    try:
        settings = make_settings(redis_url=hung, token_rate_limit="10/minute")
        app = create_app(settings)
        app[token_api.RATE_LIMITER] = TokenRateLimiter(
            settings.rate_limit_item, redis_url=hung, timeout_s=0.3, recheck_s=60
        )
        async with TestClient(TestServer(app)) as client:
            with capture_logs() as logs:
                statuses = [await _mint(client, "ignored") for _ in range(3)]
    finally:
        server.close()
        await server.wait_closed()
    assert statuses == [200, 200, 200]
    degraded = [e for e in logs if e["event"] == "token.rate_limit_degraded"]
    assert len(degraded) == 1
    assert "Timeout" in degraded[0]["error"]
