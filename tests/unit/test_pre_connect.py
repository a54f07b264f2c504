"""The pre-connect audio buffer: what is taken (the call's user, one track, a known container, a
bounded size) and how it decodes, with real Opus in WebM made by FFmpeg's encoder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import numpy as np
import pytest

from tests.fake_room import webm_opus
from voice_agent.agent.pre_connect import (
    MAX_BUFFER_BYTES,
    MAX_STREAMS,
    PreConnectBuffers,
    PreConnectRejectedError,
    check_header,
    decode,
)
from voice_agent.logging import get_logger

USER = "user-ada"
GOOD = {"trackId": "TR_mic", "sampleRate": "48000", "channels": "1"}
WEBM = "audio/webm;codecs=opus"


def _tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()


async def _chunks(data: bytes) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


def test_a_browser_buffer_decodes_to_16_khz_mono_of_its_length() -> None:
    """Two seconds of Opus in WebM decode to two seconds of 16 kHz mono PCM."""
    pcm = decode(webm_opus(_tone(2.0), sample_rate=16000), sample_rate=16000)
    assert len(pcm) / 2 / 16000 == pytest.approx(2.0, abs=0.03)


def test_the_users_header_names_its_track() -> None:
    """The call's user, a track id, Opus in WebM at 48 kHz mono: taken, for that track."""
    assert check_header(sender=USER, user=USER, attributes=GOOD, mime_type=WEBM) == "TR_mic"


@pytest.mark.parametrize(
    ("sender", "attributes", "mime_type", "reason"),
    [
        ("user-eve", GOOD, WEBM, "sender"),
        (USER, {**GOOD, "trackId": ""}, WEBM, "trackId"),
        (USER, GOOD, "application/octet-stream", "mime type"),
        (USER, {**GOOD, "sampleRate": "96000"}, WEBM, "format"),
        (USER, {**GOOD, "channels": "six"}, WEBM, "channels"),
    ],
    ids=["another-sender", "no-track", "unknown-container", "odd-rate", "bad-channels"],
)
def test_a_header_from_elsewhere_or_malformed_is_refused(
    sender: str, attributes: dict[str, str], mime_type: str, reason: str
) -> None:
    """Anyone but the call's user, or a malformed header, is refused with the reason."""
    with pytest.raises(PreConnectRejectedError, match=reason):
        check_header(sender=sender, user=USER, attributes=attributes, mime_type=mime_type)


async def test_an_oversize_buffer_is_dropped_and_the_track_goes_on_without() -> None:
    """A buffer past the size limit is dropped: the track's listener gets no buffer."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    junk = bytes(MAX_BUFFER_BYTES + 1)
    await buffers.receive(_chunks(junk), sender=USER, user=USER, attributes=GOOD, mime_type=WEBM)
    assert await buffers.take("TR_mic") is None


async def test_undecodable_bytes_are_dropped() -> None:
    """Bytes that are not audio in a container are dropped, not raised."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    await buffers.receive(
        _chunks(b"not webm" * 100), sender=USER, user=USER, attributes=GOOD, mime_type=WEBM
    )
    assert await buffers.take("TR_mic") is None


async def test_a_received_buffer_is_taken_once_for_its_track() -> None:
    """The decoded buffer goes to its track's listener, once."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    data = webm_opus(_tone(1.0), sample_rate=16000)
    await buffers.receive(_chunks(data), sender=USER, user=USER, attributes=GOOD, mime_type=WEBM)
    taken = await buffers.take("TR_mic")
    assert taken is not None
    assert taken.duration_s == pytest.approx(1.0, abs=0.03)
    assert await buffers.take("TR_mic") is None


async def test_buffers_past_the_per_call_limit_are_not_read() -> None:
    """A client sending buffer after buffer gets only the first few read and decoded."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    data = webm_opus(_tone(0.2), sample_rate=16000)
    for n in range(MAX_STREAMS + 1):
        attributes = {**GOOD, "trackId": f"TR_{n}"}
        await buffers.receive(
            _chunks(data), sender=USER, user=USER, attributes=attributes, mime_type=WEBM
        )
    assert await buffers.take(f"TR_{MAX_STREAMS - 1}") is not None
    assert not buffers.pending(f"TR_{MAX_STREAMS}")


async def test_a_buffer_still_arriving_at_the_deadline_is_taken_as_far_as_it_came() -> None:
    """livekit-client can miss the agent's subscription and record on for 10 s: what arrived by
    the deadline is heard, less what the live track carries too, and the rest is not read."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    data = webm_opus(_tone(5.0), sample_rate=16000)
    head = data[: len(data) * 3 // 5]
    arrived_s = len(decode(head, sample_rate=16000)) / 2 / 16000
    head_in, more = asyncio.Event(), asyncio.Event()
    read_after = 0

    async def recording() -> AsyncGenerator[bytes, None]:
        nonlocal read_after
        yield head
        head_in.set()  # asked for the next chunk: the head is in
        await more.wait()
        for i in range(len(head), len(data), 4096):
            read_after += 1
            yield data[i : i + 4096]

    receiving = asyncio.create_task(
        buffers.receive(recording(), sender=USER, user=USER, attributes=GOOD, mime_type=WEBM)
    )
    await head_in.wait()
    live_since = time.monotonic() - 0.5  # the live track's first frame came half a second ago
    taken = await buffers.take("TR_mic", wait_s=0.2, live_since=live_since)
    assert taken is not None
    # 0.5 s before the wait and its 0.2 s: at least 0.7 s overlap (more when the loop is late)
    assert arrived_s - 1.2 <= taken.duration_s <= arrived_s - 0.69
    assert taken.pcm == decode(head, sample_rate=16000)[: len(taken.pcm)]
    more.set()
    await asyncio.wait_for(receiving, 5)
    assert read_after == 1  # the chunk in flight; nothing after it
    assert await buffers.take("TR_mic") is None


async def test_a_late_buffer_with_nothing_arrived_is_none() -> None:
    """An announced buffer that never starts arriving leaves the track to the live audio."""
    buffers = PreConnectBuffers(sample_rate=16000, log=get_logger("test.pre_connect"))
    assert await buffers.take("TR_mic", announced=True, wait_s=0.05) is None
    assert not buffers.pending("TR_mic")
