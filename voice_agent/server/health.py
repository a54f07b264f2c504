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
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        return name, f"no answer within {timeout_s:g} s"
    except Exception as e:  # noqa: BLE001 - any dependency failure is "not ready", with its reason
        return name, f"{type(e).__name__}: {e}"[:300]
    return name, None


async def readyz(request: web.Request) -> web.Response:
    """Ready when LiveKit, the report store (and Redis, when configured) answer; else 503
    naming what failed."""
    probes = request.app[READINESS_PROBES]
    checks: dict[str, Probe] = {"livekit": probes.livekit}
    if probes.redis is not None:
        checks["redis"] = probes.redis
    if probes.store is not None:
        checks["store"] = probes.store
    results = await asyncio.gather(*(_check(n, p, probes.timeout_s) for n, p in checks.items()))
    status = {name: ("ok" if err is None else "failing") for name, err in results}
    if probes.redis is None:
        status["redis"] = "not configured"
    failing = {name: err for name, err in results if err is not None}
    if failing:
        for name, err in failing.items():
            metrics.READINESS.labels(dependency=name).inc()
            log.warning("readiness.failed", dependency=name, reason=err)
        return error_response(
            503, "not_ready", {"failing": sorted(failing), "reasons": failing, "checks": status}
        )
    return web.json_response({"status": "ready", "checks": status})
