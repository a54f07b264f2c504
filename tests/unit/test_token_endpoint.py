"""POST /api/voice-token: grants, validation, limits and headers (LiveKit not needed to mint)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from tests.helpers import TEST_API_KEY, TEST_API_SECRET, AppClient, make_settings, raw_http
from voice_agent.server.app import create_app

TOKEN_FIELDS = {"rtc_url", "token", "expires_in", "room", "identity", "client_policy"}


async def _client(**overrides: Any) -> AppClient:
    client = TestClient(TestServer(create_app(make_settings(**overrides))))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[AppClient]:
    c = await _client(token_rate_limit="1000/minute")
    yield c
    await c.close()


def _claims(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(token)


async def test_returns_only_the_contract_fields_with_no_store(client: AppClient) -> None:
    """The body holds exactly rtc_url, token, expires_in, room, identity; nothing is cached."""
    resp = await client.post("/api/voice-token")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == TOKEN_FIELDS
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["expires_in"] == 600
    assert body["rtc_url"] == "ws://127.0.0.1:9"


async def test_grant_is_one_room_microphone_only(client: AppClient) -> None:
    """The token joins only its own room and publishes only the microphone, plus data."""
    body = await (await client.post("/api/voice-token", json={})).json()
    claims = _claims(body["token"])
    video = claims.video
    assert video is not None
    assert video.room_join is True
    assert video.room == body["room"]
    assert video.can_publish_sources == ["microphone"]
    assert video.can_publish_data is True
    assert video.can_subscribe is True
    assert not video.room_admin
    assert not video.room_create
    assert not video.room_list
    assert claims.identity == body["identity"]


async def test_room_configuration_dispatches_the_agent_with_call_metadata(
    client: AppClient,
) -> None:
    """The token's RoomConfiguration names our agent and carries the call id and user id."""
    body = await (await client.post("/api/voice-token")).json()
    room_config = _claims(body["token"]).room_config
    assert room_config is not None
    agents = room_config.agents
    assert [a.agent_name for a in agents] == ["voice-agent"]
    meta = json.loads(agents[0].metadata)
    assert body["room"] == f"call-{meta['call_id']}"
    assert meta["user_id"] == body["identity"]


async def test_every_call_gets_a_new_room_and_identity(client: AppClient) -> None:
    """Two anonymous requests never share a room or an identity."""
    a = await (await client.post("/api/voice-token")).json()
    b = await (await client.post("/api/voice-token")).json()
    assert a["room"] != b["room"]
    assert a["identity"] != b["identity"]


async def test_ttl_setting_bounds_the_token_lifetime() -> None:
    """VOICE_AGENT_TOKEN_TTL_SECONDS sets expires_in and the JWT's exp."""
    client = await _client(token_ttl_seconds=120)
    try:
        body = await (await client.post("/api/voice-token")).json()
    finally:
        await client.close()
    assert body["expires_in"] == 120
    claims = api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET)
    decoded = claims.verify(body["token"])
    assert decoded.identity == body["identity"]
    import jwt

    raw = jwt.decode(body["token"], options={"verify_signature": False})
    assert 110 <= raw["exp"] - time.time() <= 121


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"display_name": 5}, "display_name"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "x" * 65}, "display_name"),
        ({"identity": "admin"}, "identity"),
        ({"room": "someone-elses-room"}, "room"),
    ],
)
async def test_wrong_fields_give_400_naming_the_field(
    client: AppClient, payload: dict[str, Any], field: str
) -> None:
    """Wrong types, bad lengths and fields the client may not set are refused by name."""
    resp = await client.post("/api/voice-token", json=payload)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_request"
    assert [d["field"] for d in body["detail"]] == [field]


@pytest.mark.parametrize(
    "name",
    [
        "Mallory\u202egnp.exe",  # right-to-left override
        "\u2066Eve\u2069",  # left-to-right isolate ... pop directional isolate
        "Bob\u200d",  # zero-width joiner (Cf)
        "line\nbreak",
        "bell\x07",
        "nul\x00",
        "sep\u2028arator",
    ],
)
async def test_display_name_with_control_or_bidi_characters_is_400(
    client: AppClient, name: str
) -> None:
    """Control, formatting and bidirectional override characters are refused, naming the field."""
    resp = await client.post("/api/voice-token", json={"display_name": name})
    assert resp.status == 400
    body = await resp.json()
    assert [d["field"] for d in body["detail"]] == ["display_name"]


async def test_display_name_with_a_lone_surrogate_is_400(client: AppClient) -> None:
    """A JSON escape for half a surrogate pair is refused, not a failure to sign the token."""
    resp = await client.post(
        "/api/voice-token",
        data=b'{"display_name": "ab\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert [d["field"] for d in (await resp.json())["detail"]] == ["display_name"]


async def test_display_name_in_any_script_is_accepted(client: AppClient) -> None:
    """Letters, accents, spaces and emoji of real names still pass."""
    for name in ["Zoë O'Brien", "李小龙", "محمد", "Ana 🙂"]:
        resp = await client.post("/api/voice-token", json={"display_name": name})
        assert resp.status == 200, name


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
async def test_malformed_json_gives_400(client: AppClient, raw: bytes) -> None:
    """A body that is not a JSON object is a 400 JSON error, not a crash."""
    resp = await client.post(
        "/api/voice-token", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] in {"malformed_json", "invalid_request"}


async def test_oversize_body_gives_413(client: AppClient) -> None:
    """A body past VOICE_AGENT_MAX_BODY_BYTES is refused with a JSON 413."""
    resp = await client.post("/api/voice-token", data=b"{" + b" " * 10_000 + b"}")
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"


async def test_unknown_route_and_wrong_method_are_json_errors(client: AppClient) -> None:
    """404 and 405 come back as JSON errors too."""
    missing = await client.get("/nope")
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"
    wrong = await client.get("/api/voice-token")
    assert wrong.status == 405
    assert (await wrong.json())["error"] == "method_not_allowed"


async def test_burst_past_the_limit_gets_429_then_recovers() -> None:
    """Past the per-IP limit: 429 with Retry-After; after the window, tokens flow again."""
    client = await _client(token_rate_limit="3/second")
    try:
        statuses = [(await client.post("/api/voice-token")).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await client.post("/api/voice-token")
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await limited.json())["error"] == "rate_limited"
        deadline = time.monotonic() + 5
        while True:
            resp = await client.post("/api/voice-token")
            if resp.status == 200:
                break
            assert resp.status == 429
            assert time.monotonic() < deadline, "rate limit never recovered"
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def test_security_headers_on_every_response(client: AppClient) -> None:
    """CSP, nosniff and Referrer-Policy are on successes and errors alike."""
    for resp in (await client.get("/healthz"), await client.get("/nope")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "ws://127.0.0.1:9" in csp
        assert "frame-ancestors 'none'" in csp


async def test_cors_is_off_unless_the_origin_is_allowlisted() -> None:
    """No CORS headers for unknown origins; the listed origin gets them, preflight included."""
    client = await _client(cors_origins="https://app.example.com")
    try:
        other = await client.post("/api/voice-token", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        preflight = await client.options(
            "/api/voice-token",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        denied = await client.options(
            "/api/voice-token",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert denied.status == 403
    finally:
        await client.close()


async def test_metrics_count_minted_tokens(client: AppClient) -> None:
    """/metrics exposes the mint counter and latency histogram."""
    await client.post("/api/voice-token")
    text = await (await client.get("/metrics")).text()
    assert 'voice_agent_token_requests_total{outcome="minted"}' in text
    assert "voice_agent_token_mint_seconds_bucket" in text


async def test_metrics_token_guards_metrics_when_set() -> None:
    """With VOICE_AGENT_METRICS_TOKEN set, /metrics needs that bearer token."""
    client = await _client(metrics_token="metrics-secret-123456")
    try:
        assert (await client.get("/metrics")).status == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-123456"})
        assert ok.status == 200
    finally:
        await client.close()


async def test_metrics_with_a_non_utf8_authorization_is_401() -> None:
    """Undecodable Authorization bytes on /metrics are refused as unauthorized, not a 500."""
    client = await _client(metrics_token="metrics-secret-123456")
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += b"Authorization: Bearer \xffmetrics\r\n\r\n"
    try:
        assert client.port is not None
        status, body = await asyncio.to_thread(raw_http, client.port, request)
    finally:
        await client.close()
    assert status == 401
    assert json.loads(body)["error"] == "unauthorized"


async def test_static_files_are_revalidated_and_unchanged_ones_are_304(client: AppClient) -> None:
    """The web client's files carry no-cache; a conditional request for an unchanged one is 304."""
    first = await client.get("/static/app.css")
    assert first.status == 200
    assert first.headers["Cache-Control"] == "no-cache"
    modified = first.headers["Last-Modified"]
    again = await client.get("/static/app.css", headers={"If-Modified-Since": modified})
    assert again.status == 304


@pytest.mark.parametrize(
    "path", ["/static/nope.css", "/static/..%2F..%2Fpyproject.toml", "/static/dist", "/static/%01"]
)
async def test_static_misses_are_json_404s(client: AppClient, path: str) -> None:
    """A missing file, a directory or a path out of the static root is the JSON 404."""
    resp = await client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_client_policy_comes_from_the_agent_profile(tmp_path: Path) -> None:
    """The token response tells the app exactly what the profile lets the agent ask of it."""
    profile = tmp_path / "p.toml"
    profile.write_text(
        '[client_actions]\nallowed = ["open_url"]\nurl_hosts = ["help.example.com"]\n'
    )
    c = await _client(profile=profile)
    try:
        body = await (await c.post("/api/voice-token")).json()
    finally:
        await c.close()
    assert body["client_policy"] == {"actions": ["open_url"], "url_hosts": ["help.example.com"]}
    default = await _client()
    try:
        body = await (await default.post("/api/voice-token")).json()
    finally:
        await default.close()
    assert body["client_policy"] == {"actions": [], "url_hosts": []}
