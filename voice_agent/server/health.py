"""`/healthz` (alive) and `/readyz` (dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from livekit import api

from voice_agent.logging import get_logger
from voice_agent.server import metrics
from voice_agent.server.errors import error_response

log = get_logger("health")

Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class ReadinessProbes:
    """The dependencies `/readyz` asks, by name; `None` means not configured."""

    livekit: Probe
    redis: Probe | None
    timeout_s: float
    store: Probe | None = None


READINESS_PROBES = web.AppKey("readiness_probes", ReadinessProbes)


def livekit_probe(lkapi: api.LiveKitAPI) -> Probe:
    """Ask LiveKit's RoomService for its rooms: proves reachability and that our keys work."""

    async def probe() -> object:
        return await lkapi.room.list_rooms(api.ListRoomsRequest())

    return probe


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


async def _check(name: str, probe: Probe, timeout_s: float) -> tuple[str, str | None]:
    """Run one probe; the word `/readyz` shows for a failure (never the exception's text)."""
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        log.warning("readiness.failed", dependency=name, error="timeout", timeout_s=timeout_s)
        return name, "timeout"
    except Exception as e:  # noqa: BLE001 - any dependency failure is "not ready"; its text is logged
        log.warning(
            "readiness.failed",
            dependency=name,
            error=f"{type(e).__name__}: {e}"[:300],
            error_type=type(e).__name__,
        )
        return name, "failing"
    return name, None


async def readyz(request: web.Request) -> web.Response:
    """Ready when LiveKit, the report store (and Redis, when configured) answer; else 503
    naming what failed. The body says only which part and how (`failing` or `timeout`): an
    exception's text can hold hosts, paths or credentials, so it goes to the log instead."""
    probes = request.app[READINESS_PROBES]
    checks: dict[str, Probe] = {"livekit": probes.livekit}
    if probes.redis is not None:
        checks["redis"] = probes.redis
    if probes.store is not None:
        checks["store"] = probes.store
    results = await asyncio.gather(*(_check(n, p, probes.timeout_s) for n, p in checks.items()))
    status = {name: ("ok" if failure is None else failure) for name, failure in results}
    if probes.redis is None:
        status["redis"] = "not configured"
    failing = sorted(name for name, failure in results if failure is not None)
    if failing:
        for name in failing:
            metrics.READINESS.labels(dependency=name).inc()
        return error_response(503, "not_ready", {"failing": failing, "checks": status})
    return web.json_response({"status": "ready", "checks": status})
