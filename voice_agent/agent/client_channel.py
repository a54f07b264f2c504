"""One call's data channel to the app: client actions out, confirmations and results in.

Outgoing actions pass the profile's `ClientActionPolicy` and their payload schema before they are
sent. Incoming messages are accepted only from the call's user on topic `client_events`, parsed
strictly, and matched to ids this channel sent; everything else is dropped. Every message either
way gets an audit entry in the call record, so staff can see what the app was asked to do and what
it answered. A malformed message never raises into the call.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from voice_agent.agent.client_messages import (
    ActionResult,
    AppContext,
    MessageRejectedError,
    UserConfirmed,
    build_client_action,
    parse_client_event,
)
from voice_agent.agent.metrics import CLIENT_EVENTS_DROPPED
from voice_agent.call_record import CallJournal, ClientActionAuditEntry
from voice_agent.logging import Logger
from voice_agent.profile import ClientActionPolicy
from voice_agent.protocol import TOPIC_CLIENT_EVENTS
from voice_agent.tooling.confirm import ConfirmationAnswer

Publish = Callable[[str], Awaitable[None]]

_MAX_OPEN_ACTIONS = 64  # ids remembered for results; older ones are forgotten first
_MAX_DROP_AUDITS = 50  # a flood of bad messages is counted, not journaled line by line
_ROOM = re.compile(r"^call-[A-Za-z0-9_-]{1,64}$")


class ClientChannel:
    """Sends client actions and receives the app's answers for one call."""

    def __init__(
        self,
        *,
        policy: ClientActionPolicy,
        journal: CallJournal,
        log: Logger,
        publish: Publish,
    ) -> None:
        self.policy = policy
        self._journal = journal
        self._log = log
        self._publish = publish
        self._confirmations: dict[str, asyncio.Future[bool]] = {}
        self._sent: dict[str, str] = {}  # id -> action, awaiting an action_result
        self._answered: set[str] = set()
        self.dropped = 0
        self.app_context: Mapping[str, Any] = {}
        self.user_identity: str | None = None

    async def send(self, action: str, payload: dict[str, Any]) -> str:
        """Send a client action; its id. Raises `MessageRejectedError` when policy refuses it."""
        try:
            message = build_client_action(action, payload, policy=self.policy)
        except MessageRejectedError as e:
            self._audit("to_app", "client_action", None, action, "refused", str(e))
            self._log.warning("client_action.refused", action=action, reason=str(e))
            raise
        action_id = str(message["id"])
        if action != "request_confirm":
            self._remember(action_id, action)
        await self._publish(json.dumps(message, separators=(",", ":")))
        self._audit("to_app", "client_action", action_id, action, "sent", None)
        self._log.info("client_action.sent", action=action, action_id=action_id)
        return action_id

    async def request_confirm(
        self, *, prompt: str, tool: str, timeout_s: float
    ) -> ConfirmationAnswer:
        """Ask the app to confirm; "timeout" when no answer arrives in time (counts as no)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        payload = {"prompt": prompt, "tool": tool, "timeout_s": timeout_s}
        try:
            action_id = await self.send("request_confirm", payload)
        except MessageRejectedError:
            return "declined"
        self._confirmations[action_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                ok = await future
        except TimeoutError:
            self._log.info("client_action.confirm_timeout", action_id=action_id, tool=tool)
            return "timeout"
        finally:
            self._confirmations.pop(action_id, None)
        return "confirmed" if ok else "declined"

    def on_data(self, data: bytes, *, topic: str | None, sender: str | None) -> None:
        """A data message from the room: accept app messages from the call's user only."""
        if topic != TOPIC_CLIENT_EVENTS:
            return
        if sender is None or sender != self.user_identity:
            self._drop(None, "message from a participant other than the call's user")
            return
        self.receive(data)

    def receive(self, raw: bytes) -> None:
        """Handle one app → agent message (already known to come from the user)."""
        try:
            event = parse_client_event(raw)
        except MessageRejectedError as e:
            self._drop(None, str(e))
            return
        if isinstance(event, UserConfirmed):
            future = self._confirmations.get(event.id)
            if future is None or future.done():
                self._drop(event.id, "user_confirmed for no pending confirmation", kind=event.type)
                return
            future.set_result(event.ok)
            self._audit("from_app", event.type, event.id, "request_confirm", "accepted", None)
            self._log.info("client_event.confirmed", action_id=event.id, ok=event.ok)
        elif isinstance(event, ActionResult):
            action = self._sent.get(event.id)
            if action is None or event.id in self._answered:
                self._drop(event.id, "action_result for no open action", kind=event.type)
                return
            self._answered.add(event.id)
            detail = None if event.ok else (event.error or "failed")
            self._audit("from_app", event.type, event.id, action, "accepted", detail)
            self._log.info("client_event.result", action_id=event.id, ok=event.ok)
        elif isinstance(event, AppContext):
            self.app_context = event.data
            self._audit("from_app", event.type, None, None, "accepted", None)
            self._log.info("client_event.context", keys=len(event.data))
            previous = event.data.get("reconnect_of")
            if isinstance(previous, str) and _ROOM.match(previous):
                # The app says it lost that call and started this one. Only a claim: any app can
                # name any room; the reports API verifies it against the store before linking.
                self._journal.add_event("reconnect_claimed", claimed_room=previous)
                self._log.info("client_event.reconnect_claimed", claimed_room=previous)

    def _remember(self, action_id: str, action: str) -> None:
        self._sent[action_id] = action
        while len(self._sent) > _MAX_OPEN_ACTIONS:
            oldest = next(iter(self._sent))
            self._sent.pop(oldest)
            self._answered.discard(oldest)

    def _drop(self, action_id: str | None, reason: str, *, kind: str = "invalid") -> None:
        self.dropped += 1
        CLIENT_EVENTS_DROPPED.inc()
        if self.dropped > _MAX_DROP_AUDITS:
            if self.dropped == _MAX_DROP_AUDITS + 1:
                self._log.warning("client_event.flood", dropped=self.dropped)
            return
        self._audit("from_app", kind, action_id, None, "dropped", reason)
        self._log.warning("client_event.dropped", reason=reason, action_id=action_id)

    def _audit(
        self,
        direction: Literal["to_app", "from_app"],
        kind: str,
        action_id: str | None,
        action: str | None,
        outcome: Literal["sent", "refused", "accepted", "dropped"],
        detail: str | None,
    ) -> None:
        self._journal.add_client_audit(
            ClientActionAuditEntry(
                at=time.time(),
                direction=direction,
                type=kind,
                id=action_id,
                action=action,
                outcome=outcome,
                detail=detail,
            )
        )
