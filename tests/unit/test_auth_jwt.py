"""jwt auth mode: only a valid Bearer token from the host application mints a voice token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from livekit import api

from tests.helpers import TEST_API_KEY, TEST_API_SECRET, AppClient, make_settings
from voice_agent.server import metrics
from voice_agent.server.app import create_app

HOST_SECRET = "host-app-signing-secret-0123456789abcdef"
AUDIENCE = "voice-agent"
ISSUER = "https://app.example.com"


def _host_token(*, key: Any = HOST_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "customer-42", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 60}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


@pytest.fixture
async def client() -> AsyncIterator[AppClient]:
    settings = make_settings(
        auth_mode="jwt",
        auth_jwt_secret=HOST_SECRET,
        auth_jwt_audience=AUDIENCE,
        auth_jwt_issuer=ISSUER,
        token_rate_limit="1000/minute",
    )
    c = TestClient(TestServer(create_app(settings)))
    await c.start_server()
    yield c
    await c.close()


def _minted() -> float:
    return metrics.TOKEN_REQUESTS.labels(outcome="minted")._value.get()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + _host_token(exp=int(time.time()) - 3600),
        "Bearer " + _host_token(aud="someone-else"),
        "Bearer " + _host_token(iss="https://evil.example"),
        "Bearer " + _host_token(key="a-different-secret-0123456789abcdef"),
        "Bearer " + _host_token(sub=None),
        "Bearer " + _host_token(exp=None),
        "Bearer " + _host_token(sub="has spaces and/slashes"),
        "Bearer " + _host_token(algorithm="none", key=None),
    ],
    ids=[
        "missing",
        "empty-bearer",
        "wrong-scheme",
        "malformed",
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "wrong-signature",
        "no-sub",
        "no-exp",
        "bad-sub",
        "alg-none",
    ],
)
async def test_bad_bearer_tokens_get_401_and_mint_nothing(
    client: AppClient, authorization: str | None
) -> None:
    """Every kind of bad host token is a 401 with WWW-Authenticate, and no token is minted."""
    before = _minted()
    headers = {"Authorization": authorization} if authorization else {}
    resp = await client.post("/api/voice-token", headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    body = await resp.json()
    assert body["error"] == "unauthorized"
    assert "token" not in body
    assert _minted() == before


async def test_valid_bearer_token_yields_identity_from_sub(client: AppClient) -> None:
    """A valid host token mints a voice token whose identity is the host token's `sub`."""
    resp = await client.post(
        "/api/voice-token", headers={"Authorization": f"Bearer {_host_token()}"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["identity"] == "customer-42"
    claims = api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(body["token"])
    assert claims.identity == "customer-42"


async def test_rs256_public_key_verifies_host_tokens(tmp_path: Path) -> None:
    """With VOICE_AGENT_AUTH_JWT_PUBLIC_KEY_FILE, RS256 tokens are verified by that key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "host.pub.pem"
    key_file.write_bytes(pem)
    settings = make_settings(
        auth_mode="jwt",
        auth_jwt_public_key_file=key_file,
        auth_jwt_audience=AUDIENCE,
        auth_jwt_issuer=ISSUER,
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        good = _host_token(key=private, algorithm="RS256", sub="rsa-user")
        resp = await c.post("/api/voice-token", headers={"Authorization": f"Bearer {good}"})
        assert resp.status == 200
        assert (await resp.json())["identity"] == "rsa-user"
        # An HS256 token signed with the public key text must not pass (algorithm confusion).
        forged = jwt.encode(
            {"sub": "x", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 60},
            "anything-but-the-key-0123456789abcdef",
            algorithm="HS256",
        )
        bad = await c.post("/api/voice-token", headers={"Authorization": f"Bearer {forged}"})
        assert bad.status == 401


async def test_identity_rate_limit_applies_per_sub() -> None:
    """In jwt mode one identity is limited even when it spreads over many addresses."""
    settings = make_settings(
        auth_mode="jwt",
        auth_jwt_secret=HOST_SECRET,
        auth_jwt_audience=AUDIENCE,
        auth_jwt_issuer=ISSUER,
        token_rate_limit="2/minute",
        trust_forwarded_for=True,
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        auth = {"Authorization": f"Bearer {_host_token()}"}
        statuses = [
            (
                await c.post("/api/voice-token", headers={**auth, "X-Forwarded-For": f"10.0.0.{i}"})
            ).status
            for i in range(3)
        ]
    assert statuses == [200, 200, 429]
