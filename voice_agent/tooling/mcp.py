"""MCP servers as tool sources: each server the agent profile declares, its tools as `ToolSpec`s.

A listed MCP tool becomes a spec the runtime runs like any `@tool`, under the same allowlist,
limits, breaker, ledger, confirmation, time limit, redaction and audit:

- **Names.** Allowlists, audit, metrics and `voice-agent tools` call it `<server>.<tool>`. The
  model API allows only `[A-Za-z0-9_-]`, at most 64 characters, so the model sees
  `function_name(server, tool)`: `<server>__<tool>` with any other character made `_` (and a long
  name cut and suffixed with a hash of the full one). Its calls are mapped back exactly; two tools
  that would look alike to the model are a `ToolLoadError` at start.
- **Destructive** when the profile's `destructive` lists it, or by the MCP annotations' own
  defaults: unless annotated `readOnlyHint: true`, a tool is destructive unless it is annotated
  `destructiveHint: false`. So an unannotated tool needs the caller's confirmation.
- **Arguments** are validated against the tool's input schema before the call
  (`json_arguments`); properties marked `writeOnly` or `format: password` are secrets, redacted in
  audit and logs like a `@tool`'s `secret_args`.
- **The call** carries, in its `_meta`, `voice-agent/idempotency_key` (the same for every repeat
  of a request, so a server with side effects can do it once), `voice-agent/call_id` and, when
  known, `voice-agent/user_id`.
- **The answer**: structured content if the server sent some, else its text content (parsed as
  JSON when it is JSON). `isError: true` is the server telling the model the request cannot be
  done (its text goes to the model, as a `ToolReportedError`'s); a dead or failing server is a
  `ToolSourceError`, a failure that counts towards the tool's breaker.

The server is the worker's: started once, shared by every call (MCP multiplexes requests on one
session), restarted or reconnected when it drops (`mcp_connection`), stopped at shutdown. Its tool
list is read at start; a server that later lists other tools needs a worker restart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    Tool,
    ToolAnnotations,
)

from voice_agent.exceptions import ConfigError, ToolLoadError, ToolReportedError
from voice_agent.logging import get_logger
from voice_agent.profile import McpServerConfig
from voice_agent.settings import environment_value
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.decorator import clean_schema
from voice_agent.tooling.json_arguments import JsonSchemaArguments, json_schema_arguments
from voice_agent.tooling.mcp_connection import (
    HttpTransport,
    McpConnection,
    McpTransport,
    StdioTransport,
)
from voice_agent.tooling.registry import ToolRegistry
from voice_agent.tooling.spec import ToolSpec

IDEMPOTENCY_META = "voice-agent/idempotency_key"
CALL_ID_META = "voice-agent/call_id"
USER_ID_META = "voice-agent/user_id"

_FUNCTION_NAME_MAX = 64
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MAX_REPORTED_CHARS = 500
_MAX_DESCRIPTION_CHARS = 2000

_log = get_logger("tooling.mcp")


def function_name(server: str, tool: str) -> str:
    """The name the model sees for `<server>.<tool>` (see the module docstring)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")
    if len(name) > _FUNCTION_NAME_MAX:
        digest = hashlib.sha256(f"{server}.{tool}".encode()).hexdigest()[:8]
        name = f"{name[: _FUNCTION_NAME_MAX - 9]}_{digest}"
    return name


def is_destructive(annotations: ToolAnnotations | None) -> bool:
    """The MCP defaults: not read-only, and destructive unless it says otherwise."""
    if annotations is None:
        return True
    if annotations.read_only_hint is True:
        return False
    return annotations.destructive_hint is not False


def server_headers(
    config: McpServerConfig,
    *,
    index: int,
    environ: Callable[[str], str | None] = environment_value,
) -> dict[str, str]:
    """The header values `headers_env` names, read from the environment; a `ConfigError`
    naming the profile field when one is unset."""
    headers: dict[str, str] = {}
    for header, variable in config.headers_env.items():
        value = environ(variable)
        if value is None:
            raise ConfigError(
                f"agent profile mcp_servers.{index}.headers_env.{header} (server "
                f"{config.name!r}): environment variable {variable} is not set"
            )
        headers[header] = value
    return headers


def transport_for(
    config: McpServerConfig,
    *,
    index: int,
    data_dir: Path,
    cwd: Path | None = None,
    environ: Callable[[str], str | None] = environment_value,
) -> McpTransport:
    """How to reach the server `config` declares (a stdio one starts in `cwd`, its stderr goes
    to the data directory)."""
    if config.command is not None:
        return StdioTransport(
            command=config.command,
            errlog=data_dir / "mcp" / f"{config.name}.stderr.log",
            cwd=cwd,
        )
    assert config.url is not None
    return HttpTransport(
        url=config.url, headers=server_headers(config, index=index, environ=environ)
    )


@dataclass(frozen=True, slots=True)
class McpToolOrigin:
    """Where one MCP tool comes from (for `voice-agent tools`)."""

    server: str
    tool: str
    transport: str
    where: str


class McpToolSource:
    """One MCP server and the tools it listed at start."""

    def __init__(self, *, config: McpServerConfig, connection: McpConnection) -> None:
        self.config = config
        self.connection = connection
        self.registry = ToolRegistry({})
        self.origins: dict[str, McpToolOrigin] = {}

    @property
    def name(self) -> str:
        """The server's name in the profile."""
        return self.config.name

    @classmethod
    async def start(
        cls,
        config: McpServerConfig,
        *,
        index: int,
        data_dir: Path,
        cwd: Path | None = None,
        environ: Callable[[str], str | None] = environment_value,
        log: Any = _log,
    ) -> McpToolSource:
        """Start or connect to the server and build its specs; `ToolLoadError` if it cannot be
        listed or its tools do not fit the profile, `ConfigError` for a missing header value."""
        transport = transport_for(config, index=index, data_dir=data_dir, cwd=cwd, environ=environ)
        connection = McpConnection(server=config.name, transport=transport, log=log)
        tools = await connection.start()
        source = cls(config=config, connection=connection)
        try:
            source._build(tools)
        except BaseException:
            await connection.aclose()
            raise
        log.info(
            "mcp.started",
            server=config.name,
            transport=transport.kind,
            where=transport.describe(),
            tools=sorted(source.registry.names()),
        )
        return source

    async def aclose(self) -> None:
        """Close the connection (a stdio server is stopped)."""
        await self.connection.aclose()

    def _build(self, tools: list[Tool]) -> None:
        listed = {t.name for t in tools}
        for option in ("destructive", "background"):
            if unknown := sorted(set(getattr(self.config, option)) - listed):
                raise ToolLoadError(
                    f"MCP server {self.name!r}: `{option}` names tools it does not list: "
                    f"{unknown} (it lists {sorted(listed)})"
                )
        specs: dict[str, ToolSpec] = {}
        for tool in tools:
            if not _TOOL_NAME.match(tool.name):
                _log.warning("mcp.tool_skipped", server=self.name, reason="name not allowed")
                continue
            spec = self._spec(tool)
            specs[spec.name] = spec
            self.origins[spec.name] = McpToolOrigin(
                server=self.name,
                tool=tool.name,
                transport=self.connection.transport.kind,
                where=self.connection.transport.describe(),
            )
        self.registry = ToolRegistry(specs)  # refuses two tools with one function name

    def _spec(self, tool: Tool) -> ToolSpec:
        name = f"{self.name}.{tool.name}"
        try:
            params = json_schema_arguments(_model_name(name), tool.input_schema)
        except ValueError as e:
            raise ToolLoadError(f"MCP server {self.name!r}: tool {tool.name!r}: {e}") from None
        annotations = tool.annotations
        description = (
            tool.description
            or tool.title
            or (annotations.title if annotations else None)
            or tool.name.replace("_", " ")
        ).strip()[:_MAX_DESCRIPTION_CHARS]
        return ToolSpec(
            name=name,
            alias=function_name(self.name, tool.name),
            description=description,
            params_model=params,
            parameters=clean_schema(tool.input_schema),
            destructive=tool.name in self.config.destructive or is_destructive(annotations),
            timeout_s=self.config.timeout_s,
            background=tool.name in self.config.background,
            secret_args=_secret_properties(tool.input_schema),
            fn=_caller(self.connection, tool.name),
            takes_model=True,
        )


def _caller(connection: McpConnection, tool: str) -> Callable[..., Any]:
    async def call(ctx: ToolContext, args: JsonSchemaArguments) -> Any:
        meta: dict[str, Any] = {IDEMPOTENCY_META: ctx.idempotency_key, CALL_ID_META: ctx.call_id}
        if ctx.user_id:
            meta[USER_ID_META] = ctx.user_id
        result = await connection.call_tool(tool, args.model_dump(mode="json"), meta=meta)
        return result_value(result)

    return call


def result_value(result: CallToolResult) -> Any:
    """What the model is given for a tool's answer (see the module docstring)."""
    if result.is_error:
        text = " ".join(b.text for b in result.content if isinstance(b, TextContent)).strip()
        if len(text) > _MAX_REPORTED_CHARS:
            text = text[: _MAX_REPORTED_CHARS - 3] + "..."
        raise ToolReportedError(text or "The tool reported an error without saying why.")
    if result.structured_content is not None:
        return result.structured_content
    values = [_block(b) for b in result.content]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _block(block: Any) -> Any:
    if isinstance(block, TextContent):
        try:
            return json.loads(block.text)
        except ValueError:
            return block.text
    if isinstance(block, ImageContent | AudioContent):
        return {"type": block.type, "mime_type": block.mime_type}  # the data is not for speech
    if isinstance(block, ResourceLink):
        return {"type": "resource_link", "uri": str(block.uri), "name": block.name}
    if isinstance(block, EmbeddedResource):
        return {"type": "resource", "uri": str(block.resource.uri)}
    return {"type": getattr(block, "type", "unknown")}


def _secret_properties(schema: dict[str, Any]) -> frozenset[str]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return frozenset()
    return frozenset(
        key
        for key, prop in properties.items()
        if isinstance(prop, dict)
        and (prop.get("writeOnly") is True or prop.get("format") == "password")
    )


def _model_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))
