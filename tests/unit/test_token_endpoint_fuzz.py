"""Hypothesis fuzzing of POST /api/voice-token: whatever arrives, never a 500."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import make_settings
from voice_agent.devstack.processes import free_port
from voice_agent.server.app import create_app


@pytest.fixture(scope="module")
def service_port() -> Iterator[int]:
    """The token service on its own loop in a thread, so hypothesis can drive it synchronously."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(create_app(make_settings(token_rate_limit="100000/minute")))

    async def start() -> None:
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
    assert started.wait(10), "token service did not start"
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["display_name", "identity", "room", "x"]), json_values, max_size=3
    ).map(lambda v: json.dumps(v).encode()),
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200
)


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/voice-token", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=bodies,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
    authorization=st.none() | header_values,
    request_id=st.none() | header_values,
)
def test_token_endpoint_never_fails_with_500(
    service_port: int,
    body: bytes,
    content_type: str,
    authorization: str | None,
    request_id: str | None,
) -> None:
    """Arbitrary bodies and headers get 200, 400 or 413 with a JSON body, never a server error."""
    headers = {"Content-Type": content_type} if content_type else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    status, raw = _post(service_port, body, headers)
    assert status in {200, 400, 413}, raw
    payload = json.loads(raw)
    if status == 200:
        fields = {"rtc_url", "token", "expires_in", "room", "identity", "client_policy"}
        assert set(payload) == fields
    else:
        assert isinstance(payload["error"], str)
