"""Shared pieces of the post-call tests: settings, a worker in this process, waits, samples."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from tests.helpers import make_settings, strip_project_env
from voice_agent.backoff import ReconnectPolicy
from voice_agent.postcall.models import CallDetail, CallStatus
from voice_agent.postcall.store import ReportStore
from voice_agent.postcall.worker import (
    PostCallContext,
    PostCallOptions,
    build_worker,
    postcall_context,
)
from voice_agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
POSTCALL_DB = 7  # the post-call tests' own Redis database, flushed before each test

T = TypeVar("T")


def report_json(*, confidence: float = 0.9, **overrides: Any) -> str:
    """A valid `PostCallReport` as the model would send it."""
    report: dict[str, Any] = {
        "summary": "The caller was charged twice for March; a refund was requested.",
        "action_items": [
            {"text": "Refund the duplicate charge on invoice 4471.", "owner": "support"}
        ],
        "email_draft": {
            "subject": "Your refund for invoice 4471",
            "body": "Hello,\n\nWe have started the refund of the duplicate charge.\n\nKind regards",
        },
        "resolution_status": "follow_up_needed",
        "sentiment": "neutral",
        "ticket": {
            "title": "Duplicate charge on invoice 4471",
            "priority": "high",
            "category": "billing",
            "description": "The March subscription was charged twice on invoice 4471.",
        },
        "confidence": confidence,
    }
    report.update(overrides)
    return json.dumps(report)


async def fresh_redis(redis_url: str) -> str:
    """The URL of the post-call tests' Redis database, emptied."""
    url = urlsplit(redis_url)._replace(path=f"/{POSTCALL_DB}", query="").geturl()
    client = aioredis.from_url(url)  # type: ignore[no-untyped-call]  # redis 5 (arq needs <6)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return url


def postcall_settings(
    tmp: Path, redis_url: str, models_url: str | None, **overrides: Any
) -> Settings:
    """Settings for a post-call test: its own data dir, the scripted model, the example tools."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": tmp,
        "tools_path": TOOLS,
        "openai_base_url": models_url,
        "postcall_max_tries": 3,
    }
    values.update(overrides)
    return make_settings(**values)


def fast_options(settings: Settings, **overrides: Any) -> PostCallOptions:
    """Worker options with test-sized times (no sleeps: the worker polls every 50 ms)."""
    values: dict[str, Any] = {
        "attempt_timeout_s": 10.0,
        "model_timeout_s": 5.0,
        "integration_timeout_s": 5.0,
        "backoff": ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.2),
        "poll_delay_s": 0.05,
        "shutdown_grace_s": 1,
        "health_interval_s": 0.5,
    }
    values.update(overrides)
    return PostCallOptions.from_settings(settings, **values)


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, options: PostCallOptions
) -> AsyncIterator[PostCallContext]:
    """The post-call worker running in this process until the block ends."""
    async with postcall_context(settings, options) as deps:
        worker = build_worker(deps)
        task = asyncio.create_task(worker.async_run())
        try:
            yield deps
        finally:
            for job in worker.tasks.values():
                job.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 20.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(
    store: ReportStore, call_id: str, status: CallStatus, *, timeout_s: float = 20.0
) -> CallDetail:
    """The call once the store shows `status`."""

    async def probe() -> CallDetail | None:
        call = await store.get_call(call_id)
        return call if call is not None and call.status is status else None

    return await eventually(probe, timeout_s=timeout_s, what=f"{call_id} to be {status.value}")


def ticket_rows(data_dir: Path, call_id: str | None = None) -> int:
    """Tickets in the example tool's SQLite file (for one call when given)."""
    path = data_dir / "tickets.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        if call_id is None:
            return int(db.execute("SELECT count(*) FROM tickets").fetchone()[0])
        query = "SELECT count(*) FROM tickets WHERE call_id = ?"
        return int(db.execute(query, (call_id,)).fetchone()[0])


def events_of(call: CallDetail) -> list[str]:
    """The call's job history as event names."""
    return [e.event for e in call.job_history]


ATTEMPT_TIMEOUT_S = 3.0  # a killed worker's job reruns this + 2 x 10 s + 20 s after it started


@contextlib.asynccontextmanager
async def postcall_process(
    tmp: Path, redis_url: str, models_url: str, name: str, **env_overrides: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`voice-agent postcall` as its own process (killed at the end if still running); its
    output goes to `tmp/<name>.log`."""
    env = strip_project_env(dict(os.environ))
    env.update(
        {
            "REDIS_URL": redis_url,
            "VOICE_AGENT_DATA_DIR": str(tmp),
            "VOICE_AGENT_TOOLS_PATH": str(TOOLS),
            "OPENAI_BASE_URL": models_url,
            "VOICE_AGENT_POSTCALL_MAX_TRIES": "3",
            "VOICE_AGENT_POSTCALL_ATTEMPT_TIMEOUT_S": str(ATTEMPT_TIMEOUT_S),
            "VOICE_AGENT_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            **env_overrides,
        }
    )
    log = (tmp / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "postcall",
        env=env,
        cwd=tmp,  # no stray .env
        stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log events called `name` in a process's log file, oldest first."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
    return found
