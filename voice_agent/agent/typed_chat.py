"""Typed chat in a call: text the caller types (LiveKit's `lk.chat`), checked like any outside
input before the agent answers it.

LiveKit's client components send a chat message as a text stream on `lk.chat`, and the same
message as a JSON data packet on the legacy topic `lk-chat-topic` (marked `ignoreLegacy` when
the server supports text streams, as ours does). `TypedChat` takes either, answers a message
once (the legacy packet carries the stream's id), and only when it comes from the call's user,
holds words (at most `MAX_TYPED_CHARS`), and keeps within `MAX_TYPED_PER_WINDOW` messages per
`RATE_WINDOW_S`. Everything else is dropped, counted, and journaled (the first few of a flood).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable

from voice_agent.agent.metrics import CLIENT_EVENTS_DROPPED
from voice_agent.call_record import CallJournal
from voice_agent.logging import Logger

MAX_TYPED_CHARS = 2000
MAX_TYPED_PER_WINDOW = 5
RATE_WINDOW_S = 10.0
_MAX_DROP_EVENTS = 20
_REMEMBERED_IDS = 64


class TypedChat:
    """Accepts the call's user's typed messages and hands each to `answer` once."""

    def __init__(
        self,
        *,
        journal: CallJournal,
        log: Logger,
        answer: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._log = log
        self._answer = answer
        self._clock = clock
        self._recent: collections.deque[float] = collections.deque()
        self._seen: collections.deque[str] = collections.deque(maxlen=_REMEMBERED_IDS)
        self.user_identity: str | None = None
        self.dropped = 0

    def text_received(self, text: str, *, sender: str | None, message_id: str | None) -> None:
        """A chat text stream arrived (`text` cut at `MAX_TYPED_CHARS` + 1 by the room)."""
        self._take(text, sender=sender, message_id=message_id)

    def legacy_received(self, data: bytes, *, sender: str | None) -> None:
        """A legacy chat data packet arrived."""
        try:
            message = json.loads(data)
        except ValueError:
            self._drop("not JSON", sender)
            return
        if not isinstance(message, dict) or not isinstance(message.get("message"), str):
            self._drop("not a chat message", sender)
            return
        if message.get("ignoreLegacy") is True:
            return  # the same message came as a text stream
        message_id = message.get("id")
        self._take(
            message["message"],
            sender=sender,
            message_id=message_id if isinstance(message_id, str) else None,
        )

    def _take(self, text: str, *, sender: str | None, message_id: str | None) -> None:
        if sender is None or sender != self.user_identity:
            self._drop("from a participant other than the call's user", sender)
            return
        if message_id is not None:
            if message_id in self._seen:
                return  # its other form was answered already
            self._seen.append(message_id)
        words = text.strip()
        if not words:
            self._drop("empty", sender)
            return
        if len(text) > MAX_TYPED_CHARS:
            self._drop(f"longer than {MAX_TYPED_CHARS} characters", sender)
            return
        now = self._clock()
        while self._recent and now - self._recent[0] >= RATE_WINDOW_S:
            self._recent.popleft()
        if len(self._recent) >= MAX_TYPED_PER_WINDOW:
            self._drop(f"more than {MAX_TYPED_PER_WINDOW} in {RATE_WINDOW_S:g} s", sender)
            return
        self._recent.append(now)
        self._answer(words)

    def _drop(self, reason: str, sender: str | None) -> None:
        self.dropped += 1
        CLIENT_EVENTS_DROPPED.inc()
        self._log.warning("chat.dropped", reason=reason, sender=sender)
        if self.dropped <= _MAX_DROP_EVENTS:
            self._journal.add_event("typed_chat_dropped", reason=reason, sender=sender)
