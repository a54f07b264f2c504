"""The web client's error states in real Chromium: each a clear message, and no half-open call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.browser.client_page import ClientPage, wait_until_gone
from tests.browser.conftest import Launch
from tests.helpers import make_settings
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.server.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@contextlib.asynccontextmanager
async def token_service_only(livekit: LiveKitEndpoint, tmp: Path) -> AsyncIterator[str]:
    """The token service on `livekit` with no agent worker at all; its base URL."""
    port = free_port()
    config = make_settings(
        livekit_url=livekit.ws_url,
        livekit_api_key=livekit.api_key,
        livekit_api_secret=livekit.api_secret,
        port=port,
        data_dir=tmp,
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _assert_no_call(client: ClientPage) -> None:
    """Idle, microphone released, no agent audio, Start call available again."""
    assert await client.page.get_attribute("body", "data-call-state") == "idle"
    assert "live" not in await client.microphone_tracks()
    assert await client.audio_elements() == 0
    assert await client.page.text_content("#agent-state") == "Not in a call"


async def test_microphone_denied_says_so_and_asks_for_no_token(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """Without microphone permission: a clear message, and the token service is never asked."""
    async with voice_stack(livekit_server, tmp_path) as stack:
        browser = await launch_chromium(microphone=silence_wav, fake_ui=False)
        client = await ClientPage.open(browser, stack.url)
        await client.page.context.clear_permissions()  # nothing granted: the prompt is denied
        await client.start_call()
        assert "Microphone access was denied" in await client.error_text()
        await _assert_no_call(client)
        assert client.token_statuses == []
        assert await client.page.is_enabled("#start-call")


async def test_token_refused_401_is_explained(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """In jwt mode without a bearer the token service answers 401: the page says it was refused."""
    jwt: dict[str, Any] = {
        "auth_mode": "jwt",
        "auth_jwt_secret": "browser-test-secret-0123456789abcdef",
        "auth_jwt_audience": "voice",
        "auth_jwt_issuer": "https://issuer.test",
    }
    async with voice_stack(livekit_server, tmp_path, **jwt) as stack:
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, stack.url)
        await client.start_call()
        message = await client.error_text()
        assert "refused to start a call (missing bearer token)" in message
        assert client.token_statuses == [401]
        await _assert_no_call(client)
        assert await client.page.is_enabled("#start-call")


async def test_rate_limited_429_shows_when_to_retry(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """Over the token rate limit: the retry time is shown and Start call waits for it."""
    async with voice_stack(livekit_server, tmp_path, token_rate_limit="1/minute") as stack:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{stack.url}/api/voice-token", json={}) as first,
        ):
            assert first.status == 200  # the one token this minute
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, stack.url)
        await client.start_call()
        message = await client.error_text()
        assert "Too many calls were started from here." in message
        assert "Try again in" in message
        assert client.token_statuses == [429]
        await _assert_no_call(client)
        assert not await client.page.is_enabled("#start-call")  # until the retry time passes


async def test_agent_that_never_joins_is_reported_and_the_call_closed(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """No agent worker: after the join timeout the page says so and leaves the room."""
    async with token_service_only(livekit_server, tmp_path) as url:
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, url)
        await client.start_call()
        await client.wait_state("in_call")
        await client.wait_agent_state("waiting")
        message = await client.error_text()  # shown after the 15 s join timeout
        assert "The agent is not available right now" in message
        await client.wait_state("idle")
        await _assert_no_call(client)
        [token] = client.tokens
        await wait_until_gone(livekit_server, token["identity"])
