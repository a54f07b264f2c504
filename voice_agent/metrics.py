"""Prometheus metrics: one registry per kind of process, and the `/metrics` handler serving one.

Metrics register into the registry of the process kind that exposes them, never into
`prometheus_client`'s global default: the agent worker's call, provider and tool metrics into
`WORKER_REGISTRY`, the token service's into `TOKEN_SERVICE_REGISTRY`. So a worker's `/metrics`
shows only worker metrics even where both kinds share a process (tests, benchmarks), and importing
one side's code never adds its counters to the other's page. Each registry also carries the
standard process, platform and garbage-collector metrics.
"""

from __future__ import annotations

import prometheus_client
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    return registry


WORKER_REGISTRY = _registry()
"""Agent worker metrics: calls, load, turn latency, provider failures and fallbacks, tools and
their breakers."""

TOKEN_SERVICE_REGISTRY = _registry()
"""Token service metrics: token requests, HTTP responses, readiness, the rate limiter."""


def metrics_endpoint(registry: CollectorRegistry) -> Handler:
    """A `GET /metrics` handler exposing `registry` in the Prometheus text format."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = prometheus_client.generate_latest(registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    return metrics
