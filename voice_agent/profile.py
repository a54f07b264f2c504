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

    [[mcp_servers]]                        # tools from a Model Context Protocol server
    name = "orders"                        # its tools are "orders.<tool>" in `[tools] allowed`
    command = ["python", "orders_mcp.py"] # stdio, started in this file's directory;
                                           # or url = "https://orders.internal/mcp" (HTTP)
    # headers_env = { Authorization = "ORDERS_MCP_TOKEN" }  # HTTP header values from the env
    # destructive = ["refund_order"]       # confirmed whatever the server's annotations say
    # background = ["export_history"]      # long tools: the conversation goes on meanwhile
    # timeout_s = 5.0                      # per call (default VOICE_AGENT_TOOL_TIMEOUT_S)

Header values are not part of the profile: `headers_env` names environment variables, read only
where the MCP servers are started (see `voice_agent.tooling.mcp`), never logged.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from voice_agent.exceptions import ConfigError
from voice_agent.settings import Settings

ClientActionName = Literal["open_url", "show_checklist", "request_confirm"]
CLIENT_ACTIONS: tuple[ClientActionName, ...] = ("open_url", "show_checklist", "request_confirm")

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")
_PYTHON_TOOL = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_SERVER = r"[A-Za-z][A-Za-z0-9_-]{0,31}"
_MCP_TOOL = r"[A-Za-z0-9_.-]{1,128}"  # the characters MCP allows in a tool name
# A Python tool's name, or an MCP tool's `<server>.<tool>`.
ToolName = Annotated[str, StringConstraints(pattern=rf"^({_PYTHON_TOOL}|{_SERVER}\.{_MCP_TOOL})$")]
McpServerName = Annotated[str, StringConstraints(pattern=rf"^{_SERVER}$")]
McpToolName = Annotated[str, StringConstraints(pattern=rf"^{_MCP_TOOL}$")]
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an HTTP header field name
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


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


class McpServerConfig(_Strict):
    """One MCP server whose tools this agent may use: started over stdio, or reached over
    streamable HTTP."""

    name: McpServerName
    command: tuple[Annotated[str, StringConstraints(min_length=1)], ...] | None = Field(
        None, min_length=1
    )
    url: str | None = Field(None, max_length=2048)
    headers_env: dict[str, str] = Field(default_factory=dict)  # header name -> variable name
    destructive: tuple[McpToolName, ...] = ()
    background: tuple[McpToolName, ...] = ()  # run without holding the conversation
    timeout_s: float | None = Field(None, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value

    @field_validator("headers_env")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, variable in value.items():
            if not _HEADER.match(header):
                raise ValueError(f"not an HTTP header name: {header!r}")
            if not _ENV_NAME.match(variable):
                raise ValueError(f"{header}: not an environment variable name: {variable!r}")
        return value

    @model_validator(mode="after")
    def _check_transport(self) -> Self:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                f"server {self.name!r}: set exactly one of `command` (a stdio server to start) "
                "or `url` (a streamable HTTP server)"
            )
        if self.headers_env and self.url is None:
            raise ValueError(f"server {self.name!r}: `headers_env` applies to `url` servers only")
        if self.headers_env and self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
                raise ValueError(
                    f"server {self.name!r}: `headers_env` over plain http to {parts.hostname} "
                    "would send its secrets in clear text; use https"
                )
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        """How the server is reached."""
        return "stdio" if self.command is not None else "http"


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
    mcp_servers: tuple[McpServerConfig, ...] = ()
    _directory: Path | None = PrivateAttr(None)

    @property
    def directory(self) -> Path | None:
        """The directory of the profile's file (stdio MCP servers start there); None when the
        profile was not read from a file."""
        return self._directory

    @model_validator(mode="after")
    def _check_mcp_names(self) -> Self:
        servers = [s.name for s in self.mcp_servers]
        if duplicates := sorted({n for n in servers if servers.count(n) > 1}):
            raise ValueError(f"mcp_servers: two servers are named {duplicates[0]!r}")
        for name in self.tools.allowed:
            server, dot, _ = name.partition(".")
            if dot and server not in servers:
                raise ValueError(
                    f"tools.allowed: {name!r} names MCP server {server!r}, which no "
                    "[[mcp_servers]] entry declares"
                )
        return self

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
            profile = cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"agent profile {path} is invalid: {_errors(e)}") from e
        profile._directory = path.resolve().parent
        return profile


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
