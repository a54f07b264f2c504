"""No secret reaches a response body or a log line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import jwt
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import TEST_API_SECRET, make_settings
from voice_agent.logging import configure_logging, get_logger
from voice_agent.server.app import create_app

HOST_SECRET = "host-app-signing-secret-0123456789abcdef"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Every log line of the test, rendered as JSON exactly as in production."""
    stream = io.StringIO()
    configure_logging(make_settings(log_format="json", log_level="debug"), stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_secrets_never_appear_in_bodies_or_logs(log_stream: io.StringIO) -> None:
    """Minting, refusing and failing readiness expose neither the API secret nor the JWT secret."""
    settings = make_settings(
        auth_mode="jwt",
        auth_jwt_secret=HOST_SECRET,
        auth_jwt_audience="aud",
        auth_jwt_issuer="iss",
        log_format="json",
        readiness_timeout_s=0.5,
    )
    good = jwt.encode({"sub": "u1", "aud": "aud", "iss": "iss", "exp": 2**31}, HOST_SECRET)
    bodies: list[str] = []
    async with TestClient(TestServer(create_app(settings))) as client:
        for headers in ({"Authorization": f"Bearer {good}"}, {"Authorization": "Bearer x.y.z"}, {}):
            resp = await client.post("/api/voice-token", headers=headers)
            bodies.append(await resp.text())
        for path in ("/readyz", "/healthz", "/metrics", "/"):
            bodies.append(await (await client.get(path)).text())
    logs = log_stream.getvalue()
    assert "token.minted" in logs
    assert "token.auth_failed" in logs
    assert "readiness.failed" in logs
    for text in [*bodies, logs]:
        assert TEST_API_SECRET not in text
        assert HOST_SECRET not in text


def test_a_secret_logged_by_mistake_is_redacted(log_stream: io.StringIO) -> None:
    """Even a careless log call cannot print a configured secret."""
    get_logger("careless").info(
        "oops", detail=f"secret is {TEST_API_SECRET}", nested=[TEST_API_SECRET]
    )
    line = json.loads(log_stream.getvalue().splitlines()[-1])
    assert TEST_API_SECRET not in json.dumps(line)
    assert "[redacted]" in line["detail"]
