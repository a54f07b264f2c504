"""Where a process's tools come from: the Python modules of the tools directory and the MCP
servers of the agent profile, merged into one `ToolRegistry`.

`ToolSources` is opened once per process (the worker, `voice-agent tools`, a text session) and
shared by every call: MCP servers are started together at open, a name defined twice or a server
that cannot be listed stops the start with a `ToolLoadError`, and `aclose` stops the servers. The
runtime needs only the registry; it does not know which source a spec came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from voice_agent.closing import AsyncClosing
from voice_agent.profile import AgentProfile, McpServerConfig
from voice_agent.settings import Settings, environment_value
from voice_agent.tooling.mcp import McpToolSource, server_headers
from voice_agent.tooling.registry import ToolRegistry


class ToolSources(AsyncClosing):
    """The tools of one process and the sources that hold them open."""

    def __init__(
        self, *, python: ToolRegistry | None = None, mcp: Sequence[McpToolSource] = ()
    ) -> None:
        self._python = python or ToolRegistry({})
        self._mcp = list(mcp)
        self.registry = ToolRegistry.merged(self._python, *(s.registry for s in self._mcp))

    @classmethod
    async def open(
        cls,
        *,
        tools_path: Path | None,
        mcp_servers: Sequence[McpServerConfig],
        data_dir: Path,
        cwd: Path | None = None,
        environ: Callable[[str], str | None] = environment_value,
    ) -> ToolSources:
        """Load the Python tools in `tools_path` (None: none) and start every MCP server (stdio
        ones in `cwd`, the profile's directory)."""
        python = ToolRegistry.load(tools_path) if tools_path is not None else None
        for index, config in enumerate(mcp_servers):  # every header value, before starting any
            if config.url is not None:
                server_headers(config, index=index, environ=environ)
        started = await asyncio.gather(
            *(
                McpToolSource.start(
                    config, index=index, data_dir=data_dir, cwd=cwd, environ=environ
                )
                for index, config in enumerate(mcp_servers)
            ),
            return_exceptions=True,
        )
        sources = [s for s in started if isinstance(s, McpToolSource)]
        failure = next((s for s in started if isinstance(s, BaseException)), None)
        try:
            if failure is not None:
                raise failure
            return cls(python=python, mcp=sources)
        except BaseException:
            await asyncio.gather(*(s.aclose() for s in sources), return_exceptions=True)
            raise

    @classmethod
    async def for_profile(
        cls, settings: Settings, profile: AgentProfile, *, all_python: bool = False
    ) -> ToolSources:
        """The sources a profile uses: the tools directory when it allows a Python tool (or
        `all_python`), and every MCP server it declares."""
        wants_python = all_python or any("." not in name for name in profile.tools.allowed)
        return await cls.open(
            tools_path=settings.tools_path if wants_python else None,
            mcp_servers=profile.mcp_servers,
            data_dir=settings.data_dir,
            cwd=profile.directory,
        )

    @property
    def mcp(self) -> list[McpToolSource]:
        """The MCP servers, in profile order."""
        return list(self._mcp)

    def describe(
        self, default_timeout_s: float, *, allowed: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """`ToolRegistry.describe` plus where each tool comes from and whether `allowed` lets
        the agent use it (`voice-agent tools`)."""
        described = self.registry.describe(default_timeout_s)
        for entry in described:
            entry["source"] = self._source_of(entry["name"])
            entry["allowed"] = entry["name"] in allowed
        return described

    def _source_of(self, name: str) -> dict[str, Any]:
        for source in self._mcp:
            origin = source.origins.get(name)
            if origin is not None:
                return {
                    "kind": "mcp",
                    "server": origin.server,
                    "tool": origin.tool,
                    "transport": origin.transport,
                    "where": origin.where,
                }
        path = self._python.source(name)
        return {"kind": "python", "file": str(path) if path is not None else None}

    async def aclose(self) -> None:
        """Stop every MCP server."""
        await asyncio.gather(*(s.aclose() for s in self._mcp), return_exceptions=True)
