"""Narrower delivery of LiveKit's native events inside a worker that runs many calls.

The LiveKit SDK hands every event of its native side (audio frames, capture acknowledgements,
room events of every room) to every subscriber in the process, each with a filter. Two kinds of
subscriber take far more than they need:

- a `Room` takes everything except media streams: the capture acknowledgement of every other
  call's agent voice (25 a second per speaking call), their caption and attribute callbacks. Its
  event loop wakes, compares the room handle, and drops them. With N calls each event wakes N
  rooms: the worker's cost grows with the square of its calls.
- a one-shot waiter (an attribute update, a caption stream, a data packet waiting for its
  acknowledgement) subscribes without a filter and is handed every audio frame of every call
  until its answer comes, which on a busy server takes long.

`install()` gives unfiltered subscribers a filter that drops the media-rate events (none of them
waits for one); `narrow_room(room)` limits a connected room to its own room events and the
callbacks it forwards to its participant (`publish_track`, `unpublish_track`, RPC). Both reach
into the SDK's internals (`FfiQueue._subscribers`, `Room._ffi_queue`, `Room._ffi_handle`), as
found in livekit 1.2; if those are missing, the worker logs `worker.ffi_routing_unavailable` and
runs unnarrowed, which is correct, only slower. `tests/integration/test_ffi_routing.py` fails
loudly if an upgrade moves them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.rtc._ffi_client import FfiClient, FfiQueue

from voice_agent.logging import get_logger

log = get_logger("agent.ffi_routing")

MEDIA_EVENTS = frozenset({"audio_stream_event", "video_stream_event", "capture_audio_frame"})
"""Events that come many times a second per call, each awaited only by its own stream/source."""

ROOM_CALLBACKS = frozenset({"rpc_method_invocation", "publish_track", "unpublish_track"})
"""Events a room must see although they carry no room handle: it forwards them."""

EventFilter = Callable[[Any], bool]


def not_media(event: Any) -> bool:
    """The filter unfiltered subscribers get: everything but the media-rate events."""
    return event.WhichOneof("message") not in MEDIA_EVENTS


def room_filter(room_handle: int) -> EventFilter:
    """What the room with native handle `room_handle` needs to see."""

    def mine(event: Any) -> bool:
        which = event.WhichOneof("message")
        if which == "room_event":
            return bool(event.room_event.room_handle == room_handle)
        return which in ROOM_CALLBACKS

    return mine


class _NarrowedQueue(FfiQueue[Any]):
    """The SDK's event queue, with `not_media` for subscribers that give no filter."""

    def subscribe(self, loop: Any = None, filter_fn: EventFilter | None = None) -> Any:
        return super().subscribe(loop, filter_fn if filter_fn is not None else not_media)


def install() -> bool:
    """Give this process's unfiltered subscribers the `not_media` filter; whether it applied."""
    queue = FfiClient.instance.queue
    if isinstance(queue, _NarrowedQueue):
        return True
    if type(queue) is not FfiQueue or not hasattr(queue, "_subscribers"):
        log.warning("worker.ffi_routing_unavailable", part="queue", found=type(queue).__name__)
        return False
    queue.__class__ = _NarrowedQueue
    return True


def narrow_room(room: rtc.Room) -> bool:
    """Limit a connected room's subscription to its own events; whether it applied."""
    queue = FfiClient.instance.queue
    target = getattr(room, "_ffi_queue", None)
    handle = getattr(getattr(room, "_ffi_handle", None), "handle", None)
    subscribers = getattr(queue, "_subscribers", None)
    lock = getattr(queue, "_lock", None)
    if target is None or handle is None or subscribers is None or lock is None:
        log.warning("worker.ffi_routing_unavailable", part="room")
        return False
    with lock:
        for i, (subscriber, loop, _previous) in enumerate(subscribers):
            if subscriber is target:
                subscribers[i] = (subscriber, loop, room_filter(handle))
                return True
    log.warning("worker.ffi_routing_unavailable", part="room_subscription")
    return False
