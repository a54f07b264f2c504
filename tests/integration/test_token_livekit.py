"""Tokens from the endpoint against the real LiveKit server: what they allow and what they don't."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api, rtc

from tests.helpers import AppClient, make_settings
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.server.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def token_client(livekit_server: LiveKitEndpoint) -> AsyncIterator[AppClient]:
    settings = make_settings(
        livekit_url=livekit_server.ws_url,
        livekit_api_key=livekit_server.api_key,
        livekit_api_secret=livekit_server.api_secret,
        token_rate_limit="1000/minute",
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@pytest.fixture
async def lkapi(livekit_server: LiveKitEndpoint) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    )
    yield client
    await client.aclose()


async def _participants(lkapi: api.LiveKitAPI, room: str) -> list[str]:
    resp = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return [p.identity for p in resp.participants]


async def test_endpoint_token_joins_the_room_it_names(
    token_client: AppClient, lkapi: api.LiveKitAPI
) -> None:
    """A python livekit.rtc client joins with the token; LiveKit lists it in that room."""
    body = await (await token_client.post("/api/voice-token")).json()
    room = rtc.Room()
    await room.connect(body["rtc_url"], body["token"])
    try:
        assert room.name == body["room"]
        assert room.local_participant.identity == body["identity"]
        assert body["identity"] in await _participants(lkapi, body["room"])
    finally:
        await room.disconnect()


async def test_endpoint_token_is_scoped_to_its_room(
    token_client: AppClient, livekit_server: LiveKitEndpoint
) -> None:
    """The caller's token cannot administer or inspect any room, its own or another."""
    body = await (await token_client.post("/api/voice-token")).json()
    as_caller = api.LiveKitAPI(livekit_server.http_url, token=body["token"])
    try:
        for room in ("call-someone-else", body["room"]):
            with pytest.raises(api.TwirpError) as err:
                await as_caller.room.list_participants(api.ListParticipantsRequest(room=room))
            assert err.value.status in (401, 403)
    finally:
        await as_caller.aclose()


async def test_endpoint_token_publishes_microphone_only(
    token_client: AppClient, lkapi: api.LiveKitAPI
) -> None:
    """LiveKit holds the caller to microphone-only publishing; the microphone itself works."""
    body = await (await token_client.post("/api/voice-token")).json()
    room = rtc.Room()
    await room.connect(body["rtc_url"], body["token"])
    try:
        audio = rtc.LocalAudioTrack.create_audio_track("mic", rtc.AudioSource(48000, 1))
        mic = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await room.local_participant.publish_track(audio, mic)
        assert publication.sid
        info = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room=body["room"], identity=body["identity"])
        )
        assert list(info.permission.can_publish_sources) == [api.TrackSource.MICROPHONE]
        assert info.permission.can_publish_data
        assert info.permission.can_subscribe
        assert not info.permission.can_update_metadata
    finally:
        await room.disconnect()


def _token(endpoint: LiveKitEndpoint, *, secret: str, ttl: timedelta, room: str) -> str:
    return (
        api.AccessToken(endpoint.api_key, secret)
        .with_identity("intruder")
        .with_ttl(ttl)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


@pytest.mark.parametrize(
    ("secret_ok", "ttl_s"),
    [(True, -3600), (False, 600)],
    ids=["expired", "wrong-secret"],
)
async def test_livekit_rejects_expired_and_forged_tokens(
    livekit_server: LiveKitEndpoint, lkapi: api.LiveKitAPI, secret_ok: bool, ttl_s: int
) -> None:
    """The LiveKit server itself refuses an expired token and one signed with another secret."""
    secret = livekit_server.api_secret if secret_ok else "not-the-secret-0123456789abcdefghij"
    token = _token(livekit_server, secret=secret, ttl=timedelta(seconds=ttl_s), room="call-x")
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await room.connect(livekit_server.ws_url, token)
    assert "intruder" not in await _participants(lkapi, "call-x")
