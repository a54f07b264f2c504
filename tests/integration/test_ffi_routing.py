"""ffi_routing against the real SDK and server: a narrowed room still sees its own events and no
longer wakes for other calls' media; unfiltered waiters still get their answers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from livekit import api, rtc
from livekit.rtc._ffi_client import FfiClient

from voice_agent.agent import ffi_routing
from voice_agent.devstack.livekit_server import LiveKitEndpoint

pytestmark = pytest.mark.integration

RATE = 48_000
FRAME = RATE // 25  # 40 ms


def _token(endpoint: LiveKitEndpoint, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return (
        api.AccessToken(endpoint.api_key, endpoint.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


class _Tap:
    """Counts, by kind, the events the SDK hands to one subscriber queue."""

    def __init__(self, queue: object) -> None:
        self.kinds: list[str] = []
        original = queue.put_nowait  # type: ignore[attr-defined]

        def put_nowait(event: object) -> None:
            self.kinds.append(event.WhichOneof("message"))  # type: ignore[attr-defined]
            original(event)

        queue.put_nowait = put_nowait  # type: ignore[attr-defined]


async def test_a_narrowed_room_sees_its_own_events_and_not_other_calls_media(
    livekit_server: LiveKitEndpoint,
) -> None:
    assert ffi_routing.install()
    name_a, name_b = f"route-a-{uuid.uuid4().hex[:6]}", f"route-b-{uuid.uuid4().hex[:6]}"
    room_a, room_b, peer = rtc.Room(), rtc.Room(), rtc.Room()
    joined = asyncio.Event()
    room_a.on("participant_connected", lambda p: joined.set())
    try:
        await room_a.connect(livekit_server.ws_url, _token(livekit_server, name_a, "agent-a"))
        await room_b.connect(livekit_server.ws_url, _token(livekit_server, name_b, "agent-b"))
        assert ffi_routing.narrow_room(room_a)
        tap = _Tap(room_a._ffi_queue)

        # Room B speaks: its capture acknowledgements must not reach room A.
        source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("voice", source)
        await room_b.local_participant.publish_track(track, rtc.TrackPublishOptions())
        for _ in range(25):
            await source.capture_frame(rtc.AudioFrame(b"\0\1" * FRAME, RATE, 1, FRAME))
        # An unfiltered waiter in room B (an attribute update) still gets its answer.
        await asyncio.wait_for(room_b.local_participant.set_attributes({"k": "v"}), 10)

        # Room A still hears its own room events.
        await peer.connect(livekit_server.ws_url, _token(livekit_server, name_a, "caller"))
        await asyncio.wait_for(joined.wait(), 10)
        await source.aclose()
    finally:
        for room in (peer, room_b, room_a):
            await room.disconnect()

    assert "room_event" in tap.kinds
    assert "capture_audio_frame" not in tap.kinds
    assert not set(tap.kinds) - {"room_event", *ffi_routing.ROOM_CALLBACKS}


async def test_unfiltered_subscribers_no_longer_get_media_events() -> None:
    assert ffi_routing.install()
    queue = FfiClient.instance.queue
    waiter = queue.subscribe()
    try:
        entry = next(e for e in queue._subscribers if e[0] is waiter)
        assert entry[2] is ffi_routing.not_media
    finally:
        queue.unsubscribe(waiter)
