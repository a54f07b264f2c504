"""/readyz asks the real LiveKit server and Redis, and names whichever fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from tests.helpers import make_settings
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.server.app import create_app
from voice_agent.server.calls_api import REPORT_STORE

pytestmark = pytest.mark.integration


async def _readyz(**overrides: Any) -> tuple[int, dict[str, Any]]:
    async with TestClient(TestServer(create_app(make_settings(**overrides)))) as client:
        resp = await client.get("/readyz")
        return resp.status, await resp.json()


def _live(endpoint: LiveKitEndpoint) -> dict[str, Any]:
    return {
        "livekit_url": endpoint.ws_url,
        "livekit_api_key": endpoint.api_key,
        "livekit_api_secret": endpoint.api_secret,
        "readiness_timeout_s": 2.0,
    }


async def test_ready_when_livekit_and_redis_answer(
    livekit_server: LiveKitEndpoint, redis_url: str
) -> None:
    """With both dependencies up, /readyz is 200 and says so for each."""
    status, body = await _readyz(**_live(livekit_server), redis_url=redis_url)
    assert status == 200
    assert body["checks"] == {"livekit": "ok", "redis": "ok", "store": "ok"}


async def test_not_ready_names_redis_when_it_is_down(livekit_server: LiveKitEndpoint) -> None:
    """Redis not answering: 503 naming redis, LiveKit still reported ok."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    status, body = await _readyz(**_live(livekit_server), redis_url=dead)
    assert status == 503
    assert body["error"] == "not_ready"
    assert body["detail"]["failing"] == ["redis"]
    assert body["detail"]["checks"]["livekit"] == "ok"


async def test_not_ready_names_livekit_when_keys_are_wrong(
    livekit_server: LiveKitEndpoint, redis_url: str
) -> None:
    """LiveKit reachable but refusing our keys is not ready either: 503 naming livekit."""
    settings = _live(livekit_server) | {"livekit_api_secret": "wrong-secret-0123456789abcdefghijkl"}
    status, body = await _readyz(**settings, redis_url=redis_url)
    assert status == 503
    assert body["detail"]["failing"] == ["livekit"]


async def test_not_ready_names_livekit_when_it_is_unreachable(redis_url: str) -> None:
    """Nothing listening at LIVEKIT_URL: 503 naming livekit."""
    status, body = await _readyz(
        livekit_url=f"ws://127.0.0.1:{free_port()}", redis_url=redis_url, readiness_timeout_s=1.0
    )
    assert status == 503
    assert body["detail"]["failing"] == ["livekit"]


async def test_not_ready_names_the_store_when_it_stops_answering(
    livekit_server: LiveKitEndpoint, redis_url: str, tmp_path: Path
) -> None:
    """The report store's database gone from under the app: 503 naming store."""
    data_dir = tmp_path / "data"
    app = create_app(make_settings(**_live(livekit_server), redis_url=redis_url, data_dir=data_dir))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200
        await app[REPORT_STORE].close()  # drop pooled connections to the old file
        shutil.rmtree(data_dir)
        data_dir.write_text("not a directory")  # so SQLite cannot open the database again
        resp = await client.get("/readyz")
        body = await resp.json()
    assert resp.status == 503
    assert body["detail"]["failing"] == ["store"]


async def test_not_ready_body_holds_no_exception_text(redis_url: str) -> None:
    """A failing dependency is named with a fixed word; its exception text is only logged."""
    port = free_port()
    with capture_logs() as logs:
        status, body = await _readyz(
            livekit_url=f"ws://127.0.0.1:{port}", redis_url=redis_url, readiness_timeout_s=1.0
        )
    assert status == 503
    assert body["detail"] == {
        "failing": ["livekit"],
        "checks": {"livekit": body["detail"]["checks"]["livekit"], "redis": "ok", "store": "ok"},
    }
    assert body["detail"]["checks"]["livekit"] in {"failing", "timeout"}
    assert str(port) not in json.dumps(body)
    failed = [e for e in logs if e["event"] == "readiness.failed"]
    assert [e["dependency"] for e in failed] == ["livekit"]
    assert failed[0]["error"]
