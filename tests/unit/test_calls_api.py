"""The staff API: who gets in (401/403/503), what bad parameters get (400), what staff read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from tests.helpers import AppClient, make_settings, raw_http
from tests.report_samples import BASE_T, sample_record, sample_report, sample_ticket
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.store import ReportStore
from voice_agent.server.app import create_app

STAFF_TOKEN = "staff-token-for-tests-0123456789"
HOST_SECRET = "host-app-signing-secret-0123456789abcdef"
AUDIENCE = "voice-agent"
ISSUER = "https://app.example.com"


def _host_token(**claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "agent-smith", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 60}
    payload.update(claims)
    return jwt.encode(payload, HOST_SECRET, algorithm="HS256")


async def _fill(data_dir: Path) -> None:
    settings = make_settings(data_dir=data_dir)
    async with await ReportStore.open(ReportStore.url_from_settings(settings)) as store:
        for i in range(3):
            record = sample_record(f"c{i}", started_at=BASE_T + 3600 * i)
            await store.add_call(record, source="agent")
        await store.save_report("c1", sample_report("Router keeps rebooting", needs_review=True))
        await store.save_integration("c1", sample_ticket("c1"))
        await store.add_job_event("c1", "done")
        await store.set_status("c2", CallStatus.DEAD, error="ticket service answered 503")


async def _client(tmp_path: Path, **overrides: Any) -> AppClient:
    await _fill(tmp_path)
    client = TestClient(TestServer(create_app(make_settings(data_dir=tmp_path, **overrides))))
    await client.start_server()
    return client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AppClient]:
    c = await _client(tmp_path, staff_token=STAFF_TOKEN)
    yield c
    await c.close()


@pytest.fixture
async def jwt_client(tmp_path: Path) -> AsyncIterator[AppClient]:
    c = await _client(
        tmp_path,
        auth_mode="jwt",
        auth_jwt_secret=HOST_SECRET,
        auth_jwt_audience=AUDIENCE,
        auth_jwt_issuer=ISSUER,
        staff_token=STAFF_TOKEN,  # ignored in jwt mode
    )
    yield c
    await c.close()


STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


@pytest.mark.parametrize("path", ["/api/calls", "/api/calls/c1"])
async def test_no_token_is_401_with_a_bearer_challenge(client: AppClient, path: str) -> None:
    """Without a token both staff routes answer 401 JSON with `WWW-Authenticate: Bearer`."""
    resp = await client.get(path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong-token", f"Basic {STAFF_TOKEN}", f"Bearer {STAFF_TOKEN}x", "Bearer "],
)
async def test_wrong_token_is_401(client: AppClient, authorization: str) -> None:
    """Anything but `Bearer <the staff token>` is refused."""
    resp = await client.get("/api/calls", headers={"Authorization": authorization})
    assert resp.status == 401


@pytest.mark.parametrize("path", ["/api/calls", "/api/calls/c1"])
async def test_non_utf8_authorization_is_401(client: AppClient, path: str) -> None:
    """Authorization bytes that are not UTF-8 are refused as unauthorized, not a server error."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"Authorization: Bearer \xff\xfe\xc3(\r\n\r\n"
    )
    assert client.port is not None
    status, body = await asyncio.to_thread(raw_http, client.port, request)
    assert status == 401
    assert json.loads(body)["error"] == "unauthorized"


async def test_denial_is_logged_without_the_token(client: AppClient) -> None:
    """A refused request logs `staff.denied` with its reason and never the token given."""
    with capture_logs() as logs:
        await client.get("/api/calls", headers={"Authorization": "Bearer guess-0123456789"})
    denied = [e for e in logs if e["event"] == "staff.denied"]
    assert denied
    assert denied[0]["reason"] == "unknown staff token"
    assert "guess-0123456789" not in repr(logs)


async def test_staff_token_unset_is_503(tmp_path: Path) -> None:
    """In anonymous mode with no staff token the API is closed: 503, never open."""
    c = await _client(tmp_path)
    try:
        resp = await c.get("/api/calls", headers={"Authorization": "Bearer anything"})
        body = await resp.json()
    finally:
        await c.close()
    assert resp.status == 503
    assert body["detail"].startswith("staff access not configured")


async def test_jwt_without_staff_role_is_403(jwt_client: AppClient) -> None:
    """A valid host JWT whose roles lack `staff` is forbidden."""
    token = _host_token(roles=["customer"])
    resp = await jwt_client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 403
    assert (await resp.json())["error"] == "forbidden"


async def test_jwt_with_staff_role_is_200(jwt_client: AppClient) -> None:
    """A valid host JWT with the `staff` role reads the list."""
    token = _host_token(roles=["support", "staff"])
    resp = await jwt_client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert [c["call_id"] for c in (await resp.json())["items"]] == ["c2", "c1", "c0"]


@pytest.mark.parametrize(
    "token",
    [
        _host_token(roles=["staff"], exp=int(time.time()) - 3600),
        jwt.encode({"sub": "x", "roles": ["staff"]}, "another-secret-0123456789abcdef-xyz"),
        STAFF_TOKEN,
    ],
    ids=["expired", "foreign-signature", "dev-staff-token"],
)
async def test_jwt_mode_refuses_other_tokens(jwt_client: AppClient, token: str) -> None:
    """In jwt mode expired, foreign and shared dev tokens all get 401."""
    resp = await jwt_client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401


async def test_list_returns_summaries_newest_first_uncached(client: AppClient) -> None:
    """Staff get the calls newest first as summaries, with `Cache-Control: no-store`."""
    resp = await client.get("/api/calls", headers=STAFF)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert [c["call_id"] for c in body["items"]] == ["c2", "c1", "c0"]
    assert body["next_cursor"] is None
    c1 = body["items"][1]
    assert c1["summary"] == "Router keeps rebooting"
    assert c1["needs_review"] is True
    assert c1["started_at"] == "2025-03-14T10:30:00Z"
    assert "record" not in c1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=dead", ["c2"]),
        ("needs_review=true", ["c1"]),
        ("q=router", ["c1"]),
        ("since=2025-03-14T10:00:00Z&until=2025-03-14T11:00:00%2B00:00", ["c1"]),
        ("until=2025-03-14", ["c2", "c1", "c0"]),
        ("since=2025-03-15", []),
    ],
)
async def test_list_filters(client: AppClient, query: str, expected: list[str]) -> None:
    """Status, review, search and date filters narrow the list; a bare `until` date is inclusive."""
    resp = await client.get(f"/api/calls?{query}", headers=STAFF)
    assert resp.status == 200
    assert [c["call_id"] for c in (await resp.json())["items"]] == expected


async def test_list_pages_with_the_cursor(client: AppClient) -> None:
    """`limit` pages the list and `cursor` continues where the last page ended."""
    first = await (await client.get("/api/calls?limit=2", headers=STAFF)).json()
    rest = await client.get(f"/api/calls?limit=2&cursor={first['next_cursor']}", headers=STAFF)
    second = await rest.json()
    assert [c["call_id"] for c in first["items"]] == ["c2", "c1"]
    assert [c["call_id"] for c in second["items"]] == ["c0"]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("status=lost", "status"),
        ("needs_review=yes", "needs_review"),
        ("since=yesterday", "since"),
        ("until=2025-13-01", "until"),
        ("since=2025-03-15&until=2025-03-14T00:00:00Z", "until"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("q=" + "x" * 201, "q"),
        ("status=dead&status=done", "status"),
        ("sort=asc", "sort"),
        ("limit=%C2%B2", "limit"),  # '²': str.isdigit says yes, int() says no
        ("limit=%D9%A3", "limit"),  # an Arabic-Indic 3
        ("until=9999-12-31", "until"),  # the end of that day is past the last datetime
        ("since=9999-12-31T23:59:59-23:59", "since"),  # past year 9999 once in UTC
        ("since=0001-01-01T00:00:00%2B23:59", "since"),  # before year 1 once in UTC
        ("q=abc%00", "q"),  # NUL: PostgreSQL text cannot hold it
    ],
)
async def test_bad_parameter_is_400_naming_it(
    client: AppClient, query: str, parameter: str
) -> None:
    """Each invalid query parameter is a 400 whose detail names the parameter."""
    resp = await client.get(f"/api/calls?{query}", headers=STAFF)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request"
    assert body["detail"]["parameter"] == parameter


async def test_detail_holds_record_report_integrations_and_history(client: AppClient) -> None:
    """One call's detail carries its transcript, report, integration results and job history."""
    resp = await client.get("/api/calls/c1", headers=STAFF)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["report"]["report"]["summary"] == "Router keeps rebooting"
    assert len(body["record"]["transcript"]) == 5
    assert body["record"]["tool_audit"][0]["tool"] == "lookup_invoice"
    assert body["integrations"][0]["result"] == {"ticket_id": "T-1042"}
    assert [e["event"] for e in body["job_history"]] == ["done"]


async def test_dead_call_detail_shows_its_last_error(client: AppClient) -> None:
    """A dead call's detail says why it died."""
    body = await (await client.get("/api/calls/c2", headers=STAFF)).json()
    assert body["status"] == "dead"
    assert body["last_error"] == "ticket service answered 503"


async def test_unknown_call_is_404(client: AppClient) -> None:
    """An id the store does not hold is a JSON 404."""
    resp = await client.get("/api/calls/deadbeef00", headers=STAFF)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_malformed_call_id_is_400(client: AppClient) -> None:
    """A call id outside the allowed characters never reaches the store."""
    resp = await client.get("/api/calls/bad%20id%3B", headers=STAFF)
    assert resp.status == 400
    assert (await resp.json())["detail"]["parameter"] == "call_id"


async def test_detail_needs_staff_too(client: AppClient) -> None:
    """The detail route refuses a wrong token like the list does."""
    resp = await client.get("/api/calls/c1", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_reports_page_is_a_public_shell(client: AppClient) -> None:
    """GET /reports serves the page without a token; it holds no call data."""
    resp = await client.get("/reports")
    assert resp.status == 200
    text = await resp.text()
    assert "reports.js" in text
    assert "Router keeps rebooting" not in text
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
