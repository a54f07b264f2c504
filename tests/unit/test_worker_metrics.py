"""The worker's `/metrics` and `/healthz`: its own metrics only, health by registration."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import prometheus_client
import pytest
from aiohttp.test_utils import TestClient, TestServer

import voice_agent
from tests.helpers import make_settings
from voice_agent.agent import metrics as worker_metrics
from voice_agent.agent.runner import health_server
from voice_agent.devstack.processes import free_port
from voice_agent.server import metrics as token_metrics
from voice_agent.server.app import create_app


@dataclass
class Status:
    """A worker's state as `/healthz` reads it."""

    worker_id: str | None = "W_test"
    closed: bool = False
    active_jobs: int = 0
    draining: bool = False


@pytest.fixture
async def worker_url() -> AsyncIterator[str]:
    """The worker's metrics port, served in this process beside the token service's counters."""
    port = free_port()
    async with health_server(make_settings(worker_metrics_port=port), Status()):
        yield f"http://127.0.0.1:{port}"


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_worker_metrics_hold_no_token_service_counters(worker_url: str) -> None:
    """Token-service counters used in the same process are absent from the worker's /metrics."""
    token_metrics.TOKEN_REQUESTS.labels(outcome="minted").inc()
    token_metrics.HTTP_RESPONSES.labels(route="/api/voice-token", status="2xx").inc()
    worker_metrics.CALLS.labels(reason="user_left").inc()
    text = await _text(f"{worker_url}/metrics")
    assert 'voice_agent_calls_total{reason="user_left"}' in text
    assert "voice_agent_active_calls" in text
    assert "voice_agent_provider_fallbacks_total" in text
    for name in (
        "voice_agent_token_requests_total",
        "voice_agent_token_mint_seconds",
        "voice_agent_http_responses_total",
        "voice_agent_readiness_failures_total",
        "voice_agent_rate_limit_degraded_total",
    ):
        assert name not in text


async def test_worker_metrics_show_load_refusals_and_breakers(worker_url: str) -> None:
    """The reported load, refused rejoins and the tool breakers are on the worker's /metrics."""
    from voice_agent.tooling import breakers

    worker_metrics.WORKER_LOAD.set(0.25)
    worker_metrics.CALLS_REFUSED.labels(action="room_closed").inc()
    breakers.BREAKER_OPEN.labels(tool="metrics_probe", scope="process").set(0)
    breakers.BREAKER_TRANSITIONS.labels(
        tool="metrics_probe", state="open", scope="process", origin="local"
    ).inc()
    text = await _text(f"{worker_url}/metrics")
    assert "voice_agent_worker_load 0.25" in text
    assert 'voice_agent_calls_refused_total{action="room_closed"}' in text
    assert 'voice_agent_tool_breaker_open{scope="process",tool="metrics_probe"}' in text
    assert "voice_agent_tool_breaker_transitions_total{" in text


def test_no_metric_registers_in_the_default_registry() -> None:
    """Each voice_agent_ metric names its process's registry, not the default no /metrics serves."""
    for module in pkgutil.walk_packages(voice_agent.__path__, "voice_agent."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert sorted(n for n in names if n.startswith("voice_agent")) == []


async def test_token_service_metrics_hold_no_worker_metrics() -> None:
    """The token service's /metrics shows its own counters and none of the worker's."""
    worker_metrics.ACTIVE_CALLS.inc()
    client = TestClient(TestServer(create_app(make_settings())))
    await client.start_server()
    try:
        await client.post("/api/voice-token")
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
        worker_metrics.ACTIVE_CALLS.dec()
    assert "voice_agent_token_requests_total" in text
    assert "voice_agent_rate_limit_degraded_total" in text
    assert "voice_agent_active_calls" not in text
    assert "voice_agent_voice_to_voice_seconds" not in text


async def test_worker_healthz_is_200_once_registered(worker_url: str) -> None:
    """A registered, open worker answers /healthz with 200 and its job count."""
    async with aiohttp.ClientSession() as http, http.get(f"{worker_url}/healthz") as response:
        assert response.status == 200
        body = await response.json()
    assert body == {
        "status": "ok",
        "pid": os.getpid(),
        "worker_id": "W_test",
        "active_jobs": 0,
        "draining": False,
    }
