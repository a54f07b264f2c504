"""Call claims: the first job of a call id runs it, every later one is refused, across workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.integration.postcall_support import fresh_redis
from voice_agent.agent.call_claims import KEY_PREFIX, CallClaims
from voice_agent.devstack.processes import free_port

pytestmark = pytest.mark.integration


def _claims(tmp: Path, redis_url: str | None) -> CallClaims:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=1) if redis_url else None
    return CallClaims(ttl_s=660, journal_dir=tmp / "calls", redis=client, timeout_s=1.0)


async def test_two_workers_on_one_redis_let_one_job_run_a_call(
    redis_url: str, tmp_path: Path
) -> None:
    """Two workers (separate claim holders, separate hosts' files) claim one call id: the first
    job runs it; the second, on the other worker, is refused and told which job holds it."""
    url = await fresh_redis(redis_url)
    first_worker, second_worker = _claims(tmp_path / "a", url), _claims(tmp_path / "b", url)
    try:
        first = await first_worker.claim("c-1", "AJ_first")
        again = await second_worker.claim("c-1", "AJ_second")
        other_call = await second_worker.claim("c-2", "AJ_other")
    finally:
        await first_worker.aclose()
        await second_worker.aclose()
    assert first.first
    assert first.shared
    assert not again.first
    assert again.owner_job_id == "AJ_first"
    assert again.shared
    assert other_call.first


async def test_the_claim_outlives_the_token(redis_url: str, tmp_path: Path) -> None:
    """The Redis claim expires only after the token TTL (plus its margin) has passed."""
    url = await fresh_redis(redis_url)
    claims = _claims(tmp_path, url)
    check = aioredis.Redis.from_url(url)
    try:
        await claims.claim("c-ttl", "AJ_1")
        ttl = await check.ttl(KEY_PREFIX + "c-ttl")
    finally:
        await claims.aclose()
        await check.aclose()
    assert 600 < ttl <= 660


async def test_without_redis_one_process_still_refuses_the_second_job(tmp_path: Path) -> None:
    """Redis unreachable: the claim is held in this process (logged as unshared), so this
    worker still runs one session per call id."""
    claims = _claims(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    try:
        first = await claims.claim("c-3", "AJ_a")
        again = await claims.claim("c-3", "AJ_b")
    finally:
        await claims.aclose()
    assert first.first
    assert not first.shared
    assert not again.first
    assert again.owner_job_id == "AJ_a"


async def test_a_journal_on_this_host_refuses_the_call_even_if_redis_forgot_it(
    redis_url: str, tmp_path: Path
) -> None:
    """A call whose journal is on this host already had a session here: refused, even when
    Redis holds no claim (flushed, or restarted without persistence)."""
    url = await fresh_redis(redis_url)
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "c-4.jsonl").write_text('{"k":"call","d":{}}\n')
    claims = _claims(tmp_path, url)
    try:
        claim = await claims.claim("c-4", "AJ_late")
    finally:
        await claims.aclose()
    assert not claim.first
    assert claim.owner_job_id is None
