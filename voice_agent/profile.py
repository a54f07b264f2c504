"""Agent profiles: who the agent is on a call and what it may do, one TOML file per agent.

A profile holds the instructions, greeting and voice, the tools the model may call, the client
actions the agent may send to the app (and the URL hosts `open_url` may name), and the limits of a
call. The runtime enforces every allowance here; the model is only ever shown the allowed tools.
`VOICE_AGENT_PROFILE` names the file; without one, the built-in profile comes from the settings and
allows no tools and no client actions.

    name = "support"
    instructions = "You are the support line of Example Corp..."
    greeting = "Hi, this is Example support. How can I help?"
    voice = "alloy"            # optional: overrides VOICE_AGENT_TTS_VOICE

    [tools]
    allowed = ["get_incident_status", "create_ticket"]
    max_calls_per_turn = 3
    max_calls_per_call = 12

    [client_actions]
    allowed = ["open_url", "show_checklist", "request_confirm"]
    url_hosts = ["status.example.com"]

    [limits]
    max_call_s = 900
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from voice_agent.exceptions import ConfigError
from voice_agent.settings import Settings

ClientActionName = Literal["open_url", "show_checklist", "request_confirm"]
CLIENT_ACTIONS: tuple[ClientActionName, ...] = ("open_url", "show_checklist", "request_confirm")

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")
ToolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolAllowance(_Strict):
    """The tools the model may call, and how often."""

    allowed: tuple[ToolName, ...] = ()
    max_calls_per_turn: int = Field(4, ge=1, le=20)
    max_calls_per_call: int = Field(20, ge=1, le=500)


class ClientActionPolicy(_Strict):
    """The client actions the agent may send to the app, and the hosts `open_url` may open."""

    allowed: tuple[ClientActionName, ...] = ()
    url_hosts: tuple[str, ...] = ()

    @field_validator("url_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = tuple(h.lower() for h in value)
        for host in hosts:
            if not _HOST.match(host):
                raise ValueError(f"not a host name: {host!r}")
        return hosts

    def allows(self, action: str) -> bool:
        """Whether the agent may send `action` at all."""
        return action in self.allowed

    def allows_host(self, host: str) -> bool:
        """Whether `host` is listed (exactly, or under a `*.domain` entry)."""
        host = host.lower().rstrip(".")
        for entry in self.url_hosts:
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and host != entry[2:]:
                    return True
            elif host == entry:
                return True
        return False

    def for_browser(self) -> dict[str, list[str]]:
        """What the app is told with its token, so it can enforce the same policy."""
        return {"actions": list(self.allowed), "url_hosts": list(self.url_hosts)}


class CallLimits(_Strict):
    """Limits of one call (None: the settings' value)."""

    max_call_s: float | None = Field(None, gt=0, le=86_400)


class AgentProfile(_Strict):
    """One agent's identity, allowances and limits."""

    name: str = Field("default", min_length=1, max_length=64)
    instructions: str = Field(min_length=1, max_length=20_000)
    greeting: str = Field(min_length=1, max_length=1_000)
    voice: str | None = Field(None, min_length=1, max_length=64)
    tools: ToolAllowance = ToolAllowance()
    client_actions: ClientActionPolicy = ClientActionPolicy()
    limits: CallLimits = CallLimits()

    @classmethod
    def built_in(cls, settings: Settings) -> AgentProfile:
        """The profile used without a file: the settings' instructions and greeting, no tools."""
        return cls(instructions=settings.instructions, greeting=settings.greeting)

    @classmethod
    def from_file(cls, path: Path, *, settings: Settings) -> AgentProfile:
        """Read and validate a TOML profile; unset instructions/greeting come from settings."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read agent profile {path}: {e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"agent profile {path} is not valid TOML: {e}") from e
        data.setdefault("instructions", settings.instructions)
        data.setdefault("greeting", settings.greeting)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"agent profile {path} is invalid: {_errors(e)}") from e


def load_profile(settings: Settings) -> AgentProfile:
    """The profile `VOICE_AGENT_PROFILE` names, or the built-in one."""
    if settings.profile is None:
        return AgentProfile.built_in(settings)
    return AgentProfile.from_file(settings.profile, settings=settings)


def _errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "profile"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
