"""The data-channel messages between agent and app, validated at the boundary.

Agent → app (topic `client_actions`): a `client_action` whose payload must match its action's
schema and pass the agent profile's `ClientActionPolicy` before it is sent. App → agent (topic
`client_events`): `user_confirmed`, `action_result` and `context`, at most 8 KiB each, strictly
typed; anything else is rejected with a reason and never reaches the call's logic.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from voice_agent.profile import ClientActionName, ClientActionPolicy
from voice_agent.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ProtocolVersion

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _first_error(error: ValidationError, *, whole: str) -> str:
    """ "field.path: what is wrong" for the first problem (`whole` when it is the whole object)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or whole
    return f"{where}: {first['msg']}"


class MessageRejectedError(ValueError):
    """A data-channel message failed validation or policy; the reason is safe to log."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# App → agent


class _Incoming(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "yes" is not True


class UserConfirmed(_Incoming):
    """The user answered a `request_confirm`."""

    type: Literal["user_confirmed"]
    v: ProtocolVersion
    id: _Id
    ok: bool


class ActionResult(_Incoming):
    """The app executed (or refused) a client action."""

    type: Literal["action_result"]
    v: ProtocolVersion
    id: _Id
    ok: bool
    error: str | None = Field(None, max_length=500)


class AppContext(_Incoming):
    """Structured context the app shares with the agent (page, account, ...)."""

    type: Literal["context"]
    v: ProtocolVersion
    data: dict[str, Any]


ClientEvent = Annotated[UserConfirmed | ActionResult | AppContext, Field(discriminator="type")]
_EVENT: TypeAdapter[UserConfirmed | ActionResult | AppContext] = TypeAdapter(ClientEvent)


def parse_client_event(raw: bytes) -> UserConfirmed | ActionResult | AppContext:
    """Validate one app → agent message, or raise `MessageRejectedError` saying why."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageRejectedError(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise MessageRejectedError("message is not JSON") from e
    if not isinstance(data, dict):
        raise MessageRejectedError("message is not a JSON object")
    try:
        return _EVENT.validate_python(data)
    except ValidationError as e:
        raise MessageRejectedError(_first_error(e, whole="message")) from None


# Agent → app


class OpenUrl(_Strict):
    """Open a link in the app (https, on an allowed host)."""

    url: str = Field(min_length=8, max_length=2048)
    label: str | None = Field(None, max_length=120)


class ShowChecklist(_Strict):
    """Show the user a checklist to follow."""

    title: str = Field(min_length=1, max_length=120)
    items: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=20
    )


class RequestConfirm(_Strict):
    """Ask the user to confirm (or decline) what the agent is about to do."""

    prompt: str = Field(min_length=1, max_length=300)
    tool: str | None = Field(None, max_length=64)
    timeout_s: float = Field(gt=0, le=300)

    @field_validator("prompt")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


PAYLOADS: dict[ClientActionName, type[_Strict]] = {
    "open_url": OpenUrl,
    "show_checklist": ShowChecklist,
    "request_confirm": RequestConfirm,
}


def build_client_action(
    action: str, payload: dict[str, Any], *, policy: ClientActionPolicy
) -> dict[str, Any]:
    """A policy-checked `client_action` message ready to send, or `MessageRejectedError`."""
    if not policy.allows(action):
        raise MessageRejectedError(f"client action {action!r} is not allowed for this agent")
    model = PAYLOADS[action]  # type: ignore[index]  # allows() admits only known names
    try:
        checked = model.model_validate(payload)
    except ValidationError as e:
        raise MessageRejectedError(f"{action} payload {_first_error(e, whole='payload')}") from None
    if isinstance(checked, OpenUrl):
        parts = urlsplit(checked.url)
        if parts.scheme != "https" or not parts.hostname:
            raise MessageRejectedError("open_url needs an https URL")
        if not policy.allows_host(parts.hostname):
            raise MessageRejectedError(f"open_url host {parts.hostname!r} is not allowed")
    message = {
        "type": "client_action",
        "v": PROTOCOL_VERSION,
        "id": f"act_{secrets.token_hex(8)}",
        "action": action,
        "payload": checked.model_dump(exclude_none=True),
    }
    if len(json.dumps(message).encode()) > MAX_MESSAGE_BYTES:
        raise MessageRejectedError("client action is larger than the message limit")
    return message
