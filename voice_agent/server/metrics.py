"""Prometheus metrics of the token service (exposed at `GET /metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from voice_agent.metrics import TOKEN_SERVICE_REGISTRY

TOKEN_REQUESTS = Counter(
    "voice_agent_token_requests_total",
    "Voice token requests by outcome.",
    ["outcome"],
    registry=TOKEN_SERVICE_REGISTRY,
)
TOKEN_MINT_SECONDS = Histogram(
    "voice_agent_token_mint_seconds",
    "Time to authenticate, rate-limit and mint one voice token.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=TOKEN_SERVICE_REGISTRY,
)
HTTP_RESPONSES = Counter(
    "voice_agent_http_responses_total",
    "HTTP responses by route and status class.",
    ["route", "status"],
    registry=TOKEN_SERVICE_REGISTRY,
)
READINESS = Counter(
    "voice_agent_readiness_failures_total",
    "Readiness checks that failed, by dependency.",
    ["dependency"],
    registry=TOKEN_SERVICE_REGISTRY,
)
RATE_LIMIT_DEGRADED = Counter(
    "voice_agent_rate_limit_degraded_total",
    "Times the token rate limiter lost Redis and counted in process memory instead.",
    registry=TOKEN_SERVICE_REGISTRY,
)
