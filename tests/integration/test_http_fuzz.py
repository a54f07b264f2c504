"""Hypothesis fuzzing of every route of the token service: whatever arrives, never a 5xx.

The app runs as `voice-agent serve` would, with every dependency real (LiveKit, Redis, the report
store holding calls in each status): in caller-JWT mode on SQLite, and in anonymous mode with a
staff token on PostgreSQL.
Requests go out as raw bytes, so headers may hold what no HTTP library sends (undecodable bytes,
surrogates after decoding). Examples are derandomized, so CI runs the same cases every time;
to explore further, raise `max_examples` and turn `derandomize` off locally.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import asyncpg
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import api

from tests.helpers import make_settings, raw_http
from tests.report_samples import BASE_T, sample_record, sample_report
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.store import ReportStore
from voice_agent.server.app import create_app

pytestmark = pytest.mark.integration

STAFF_TOKEN = "staff-token-for-fuzzing-0123456789"
METRICS_TOKEN = "metrics-token-for-fuzzing-0123456789"
HOST_SECRET = "host-app-secret-for-fuzzing-0123456789abcdef"
AUDIENCE = "voice-agent"
ISSUER = "https://app.example.com"
# The fuzzed app's queue lives in its own Redis database, away from other tests' workers.
FUZZ_REDIS_DB = 9
KNOWN_CALLS = ("fz-queued", "fz-done", "fz-dead")
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Service:
    """A running app under fuzz, and credentials that get past its doors."""

    port: int
    mode: str
    livekit: LiveKitEndpoint
    good_authorizations: tuple[str, ...]


def _host_jwt(**claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "fuzz-user", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 3600}
    return jwt.encode(payload | claims, HOST_SECRET, algorithm="HS256")


async def _fill(store: ReportStore) -> None:
    for i, call_id in enumerate(KNOWN_CALLS):
        await store.add_call(sample_record(call_id, started_at=BASE_T + 60 * i), source="agent")
    await store.save_report("fz-done", sample_report("Printer offline"))
    await store.set_status("fz-done", CallStatus.DONE, event="done")
    await store.set_status("fz-dead", CallStatus.DEAD, error="ticket service answered 503")


@pytest.fixture(scope="module", params=["jwt", "anonymous"])
def service(
    request: pytest.FixtureRequest,
    livekit_server: LiveKitEndpoint,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The app on its own loop in a thread, so Hypothesis can drive it synchronously."""
    mode: str = request.param
    data_dir: Path = tmp_path_factory.mktemp(f"fuzz-{mode}")
    # One mode on each store backend: SQLite by default, PostgreSQL (which refuses NUL in text).
    database: dict[str, Any] = {}
    if mode == "anonymous":
        base: str = request.getfixturevalue("postgres_url")
        database["database_url"] = base.rsplit("/", 1)[0] + f"/fuzz_{uuid.uuid4().hex[:12]}"
    auth: dict[str, Any] = (
        {
            "auth_mode": "jwt",
            "auth_jwt_secret": HOST_SECRET,
            "auth_jwt_audience": AUDIENCE,
            "auth_jwt_issuer": ISSUER,
        }
        if mode == "jwt"
        else {"staff_token": STAFF_TOKEN}
    )
    app_settings = make_settings(
        livekit_url=livekit_server.ws_url,
        livekit_api_key=livekit_server.api_key,
        livekit_api_secret=livekit_server.api_secret,
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{FUZZ_REDIS_DB}",
        data_dir=data_dir,
        metrics_token=METRICS_TOKEN,
        token_rate_limit="1000000/minute",
        readiness_timeout_s=15.0,  # a busy machine is slow, not down
        cors_origins="https://app.example.com",
        **auth,
        **database,
    )
    good = (
        (_host_jwt(roles=["staff"]), _host_jwt(), f"Bearer {METRICS_TOKEN}")
        if mode == "jwt"
        else (STAFF_TOKEN, f"Bearer {METRICS_TOKEN}")
    )
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(create_app(app_settings), handle_signals=False)

    async def start() -> None:
        if "database_url" in database:
            admin = await asyncpg.connect(base)
            try:
                await admin.execute(
                    f'CREATE DATABASE "{database["database_url"].rsplit("/", 1)[1]}"'
                )
            finally:
                await admin.close()
        queue_db = aioredis.Redis.from_url(app_settings.redis_url or "")
        try:
            await queue_db.flushdb()  # nothing left from an earlier run against a given REDIS_URL
        finally:
            await queue_db.aclose()
        async with await ReportStore.open(ReportStore.url_from_settings(app_settings)) as store:
            await _fill(store)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "the app did not start"
    bearer = tuple(g if g.startswith("Bearer ") else f"Bearer {g}" for g in good)
    yield Service(port=port, mode=mode, livekit=livekit_server, good_authorizations=bearer)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


# -- strategies ----------------------------------------------------------------------------------

# Header bytes aiohttp's parser passes to the app: no ASCII controls but tab (it refuses those
# itself, with a plain 400, before any route runs), anything else including undecodable UTF-8.
_CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"
header_bytes = st.binary(max_size=120).map(lambda b: b.translate(None, _CONTROLS).strip())
text_values = st.text(max_size=60)
url_part = st.one_of(
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),
    text_values.map(lambda t: quote_from_bytes(t.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(["..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "", "%00", "app.css", "dist"]),
)
call_ids = st.one_of(st.sampled_from(KNOWN_CALLS), url_part)
paths = st.one_of(
    st.sampled_from(
        [
            "/",
            "/api/voice-token",
            "/webhooks/livekit",
            "/healthz",
            "/readyz",
            "/metrics",
            "/reports",
            "/api/calls",
            "/static/app.css",
            "/static/dist/app.js",
            "/static/reports.js",
        ]
    ),
    call_ids.map(lambda c: f"/api/calls/{c}"),
    call_ids.map(lambda c: f"/api/calls/{c}/retry"),
    url_part.map(lambda p: f"/static/{p}"),
    st.lists(url_part, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)
query_names = st.sampled_from(
    ["since", "until", "status", "needs_review", "q", "limit", "cursor", "x", ""]
)
query_values = st.one_of(
    url_part,
    st.sampled_from(
        [
            "9999-12-31",
            "0001-01-01",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00%2B23:59",
            "%C2%B2",
            "-1",
            "0",
            "201",
            "1e3",
            "true",
            "dead",
            "eyJ4Ijp7fX0",
        ]
    ),
)
queries = st.lists(st.tuples(query_names, query_values), max_size=4).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
# The list API's own parameters, each at most once (else the first check answers them all).
staff_queries = st.lists(
    st.tuples(
        st.sampled_from(["since", "until", "status", "needs_review", "q", "limit", "cursor"]),
        query_values,
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text_values, inner, max_size=3),
    max_leaves=10,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["display_name", "identity", "room"]), json_values).map(
        lambda v: json.dumps(v).encode()
    ),
)
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
optional_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            [b"application/json", b"application/webhook+json", b"text/plain", b"multipart/form"]
        )
        | header_bytes,
        "X-Request-ID": header_bytes,
        "Origin": st.sampled_from([b"https://app.example.com", b"null"]) | header_bytes,
        "Access-Control-Request-Method": st.sampled_from([b"POST", b"GET"]) | header_bytes,
        "X-Forwarded-For": header_bytes,
        "If-Modified-Since": st.sampled_from([b"Mon, 01 Jan 2001 00:00:00 GMT", b"0"])
        | header_bytes,
        "Range": st.sampled_from([b"bytes=0-1", b"bytes=99999999-", b"bytes=5-1"]) | header_bytes,
        "Accept-Encoding": st.sampled_from([b"gzip", b"br, deflate"]) | header_bytes,
    },
)


def _authorizations(service: Service) -> st.SearchStrategy[bytes | None]:
    good = [a.encode() for a in service.good_authorizations]
    return st.one_of(
        st.none(),
        st.sampled_from(good),
        header_bytes,
        header_bytes.map(lambda b: b"Bearer " + b),
        st.sampled_from(good).map(lambda g: g + b"\xff"),
    )


def _request(method: str, target: str, headers: dict[str, bytes], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _assert_served(method: str, status: int, body: bytes) -> None:
    """No 5xx; every error is the JSON body of the contract."""
    assert status < 500, body[:500]
    # 416 is the one error aiohttp's FileResponse writes itself, while sending, past middleware.
    if status >= 400 and method != "HEAD" and status != 416:
        payload = json.loads(body)
        assert set(payload) == {"error", "detail"}, payload
        assert isinstance(payload["error"], str)
        assert payload["error"]


# -- tests ---------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), method=methods, path=paths, query=queries, body=bodies)
def test_any_request_on_any_route_gets_no_5xx(
    service: Service, data: st.DataObject, method: str, path: str, query: str, body: bytes
) -> None:
    """Arbitrary methods, paths, query strings, headers and bodies never get a server error."""
    headers = data.draw(optional_headers)
    authorization = data.draw(_authorizations(service))
    if authorization is not None:
        headers["Authorization"] = authorization
    target = f"{path}?{query}" if query else path
    status, raw = raw_http(service.port, _request(method, target, headers, body))
    _assert_served(method, status, raw)


@FUZZ
@given(query=staff_queries, call_id=call_ids, route=st.sampled_from(["list", "one"]))
def test_staff_reads_with_fuzzed_parameters_get_no_5xx(
    service: Service, query: str, call_id: str, route: str
) -> None:
    """Past the staff check, any query string or call id is a 200, 400 or 404, never a 5xx."""
    staff = service.good_authorizations[0].encode()
    path = "/api/calls" if route == "list" else f"/api/calls/{call_id}"
    target = f"{path}?{query}" if query else path
    status, raw = raw_http(service.port, _request("GET", target, {"Authorization": staff}, b""))
    _assert_served("GET", status, raw)
    assert status in {200, 400, 404}, raw[:300]


@FUZZ
@given(call_id=call_ids)
def test_staff_retries_of_any_call_id_get_no_5xx(service: Service, call_id: str) -> None:
    """Retrying known, unknown and malformed calls is a 202, 400, 404 or 409, never a 5xx."""
    staff = service.good_authorizations[0].encode()
    target = f"/api/calls/{call_id}/retry"
    status, raw = raw_http(service.port, _request("POST", target, {"Authorization": staff}, b""))
    _assert_served("POST", status, raw)
    assert status in {202, 400, 404, 409}, raw[:300]


def _sign(service: Service, body: bytes, *, secret: str | None = None, ttl_s: int = 600) -> bytes:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = (
        api.AccessToken(service.livekit.api_key, secret or service.livekit.api_secret)
        .with_sha256(digest)
        .with_ttl(timedelta(seconds=ttl_s))
        .to_jwt()
    )
    return token.encode()


webhook_events = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["room_finished", "room_started", "participant_joined"])
        | text_values,
        "id": text_values,
        "createdAt": st.integers() | text_values,
        "room": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["call-fz-webhook", "call-", "call-fz-done", "other"])
                | text_values.map(lambda t: f"call-{t}"),
                "sid": text_values,
                "creationTime": st.integers(min_value=-(2**63), max_value=2**63 - 1) | text_values,
                "numParticipants": st.integers(),
            },
        )
        | json_values,
    },
)


@FUZZ
@given(
    event=webhook_events,
    extra=bodies,
    signature=st.sampled_from(["valid", "other_body", "wrong_secret", "expired", "garbage"]),
    use_event=st.booleans(),
)
def test_signed_and_forged_webhooks_get_no_5xx(
    service: Service, event: dict[str, Any], extra: bytes, signature: str, use_event: bool
) -> None:
    """Webhooks with valid, mismatched, wrongly keyed or expired signatures, over event-shaped
    and arbitrary bodies, are a 200, 400 or 401; never a 5xx."""
    body = json.dumps(event).encode() if use_event else extra
    signers: dict[str, Callable[[], bytes]] = {
        "valid": lambda: _sign(service, body),
        "other_body": lambda: _sign(service, body + b" "),
        "wrong_secret": lambda: _sign(service, body, secret="not-the-secret-0123456789abcdefgh"),
        "expired": lambda: _sign(service, body, ttl_s=-120),
        "garbage": lambda: b"not.a.jwt\xff",
    }
    token = signers[signature]()
    headers = {"Authorization": token, "Content-Type": b"application/webhook+json"}
    status, raw = raw_http(service.port, _request("POST", "/webhooks/livekit", headers, body))
    _assert_served("POST", status, raw)
    assert status in {200, 400, 401}, raw[:300]
    if signature != "valid":
        assert status in {400, 401}
