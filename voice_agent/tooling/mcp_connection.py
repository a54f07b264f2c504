"""One live client connection to an MCP server, kept up for as long as the worker runs.

The `mcp` SDK's transports and `ClientSession` are anyio context managers that must be entered
and left by one task, so each connection has an owner task: it starts the server (stdio) or
connects to it (streamable HTTP), initialises the session, lists the tools, and then holds the
session open while the calls of every call session go through it concurrently (JSON-RPC matches
answers to requests). When the connection ends — the stdio server exits (its stdout reaches EOF),
the transport fails, or a call finds it closed — the owner leaves the session (the SDK stops what
is left of a stdio server: stdin closed, then SIGTERM, then SIGKILL, each wait bounded) and
starts again after an exponential backoff with jitter, bounded at `max_delay_s`. Calls made
meanwhile wait for the new session within their own time limit.

A call that was in flight when the connection dropped fails (`ToolSourceError`): the server may
or may not have acted on it, so it is never sent again by this layer. The one exception is an
HTTP server that answers "session terminated" (HTTP 404 for our session id: it restarted and
never saw the request); that call is sent once more on a fresh session.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, cast
from urllib.parse import urlsplit

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client  # the SDK's client factory
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_REQUEST,
    CallToolResult,
    Implementation,
    PaginatedRequestParams,
    RequestParamsMeta,
    Tool,
)

from voice_agent import __version__
from voice_agent.backoff import ReconnectPolicy
from voice_agent.closing import AsyncClosing
from voice_agent.exceptions import ToolLoadError, ToolSourceError

_CLIENT = Implementation(name="voice-agent", version=__version__)
_MAX_PAGES = 50  # tools/list pages read at start (a paginator that never ends cannot hang it)
_CLOSE_TIMEOUT_S = 15.0  # the SDK's stdio shutdown escalation takes at most about 6 s
_LOG_TAIL_CHARS = 300
DEFAULT_RECONNECT = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=10.0)

Streams = tuple[Any, Any]  # the SDK's (read stream, write stream) pair


class McpTransport(Protocol):
    """How to reach one server."""

    @property
    def kind(self) -> str:
        """ "stdio" or "http"."""
        ...

    def describe(self) -> str:
        """Where the server is, without secrets (for logs and `voice-agent tools`)."""
        ...

    def open(self) -> contextlib.AbstractAsyncContextManager[Streams]:
        """Start or connect to the server; the SDK's stream pair while it lasts."""
        ...

    def failure_hint(self) -> str:
        """What the operator can read to see why the server failed ("" when nothing)."""
        ...


@dataclass(frozen=True, kw_only=True)
class StdioTransport:
    """A server started as a subprocess, speaking JSON-RPC lines on stdin/stdout.

    It runs in `cwd` (the agent profile's directory, so relative paths in the command are
    relative to the profile file) with the SDK's minimal environment (PATH, HOME, USER, ...):
    nothing of ours, such as API keys, reaches it. `python` or `python3` as the command runs the
    worker's own interpreter. Its stderr is appended to `errlog`.
    """

    command: tuple[str, ...]
    errlog: Path
    cwd: Path | None = None
    kind: str = "stdio"

    def describe(self) -> str:
        return "stdio: " + " ".join(self.command)

    def failure_hint(self) -> str:
        try:
            text = self.errlog.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        tail = lines[-1] if lines else ""
        if len(tail) > _LOG_TAIL_CHARS:
            tail = "..." + tail[-_LOG_TAIL_CHARS:]
        return f"last stderr line: {tail!r} (all of it in {self.errlog})" if tail else ""

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Streams]:
        program, *args = self.command
        if program in ("python", "python3"):
            program = sys.executable
        self.errlog.parent.mkdir(parents=True, exist_ok=True)
        with self.errlog.open("a", encoding="utf-8") as errlog:
            errlog.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.describe()}\n")
            errlog.flush()
            params = StdioServerParameters(command=program, args=list(args), cwd=self.cwd)
            async with stdio_client(params, errlog=errlog) as streams:
                yield streams


@dataclass(frozen=True, kw_only=True)
class HttpTransport:
    """A server reached over streamable HTTP, with headers (credentials) sent on every request."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    kind: str = "http"

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"http: {parts.scheme}://{host}{parts.path}"  # no credentials, no query

    def failure_hint(self) -> str:
        return ""

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Streams]:
        async with (
            create_mcp_http_client(headers=dict(self.headers)) as client,
            streamable_http_client(self.url, http_client=client) as streams,
        ):
            yield streams


class _EndWatch(AsyncClosing):
    """A transport's read stream that reports when it ends (the server exited or hung up)."""

    def __init__(self, stream: Any, on_end: Callable[[], None]) -> None:
        self._stream = stream
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._stream, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._on_end()
        await self._stream.aclose()


@dataclass(eq=False)
class _Live:
    """One session while it lasts."""

    session: ClientSession
    over: asyncio.Event = field(default_factory=asyncio.Event)


class McpConnection:
    """The worker's connection to one MCP server (see the module docstring)."""

    def __init__(
        self,
        *,
        server: str,
        transport: McpTransport,
        log: Any,
        reconnect: ReconnectPolicy = DEFAULT_RECONNECT,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.server = server
        self.transport = transport
        self.restarts = 0  # sessions opened after the first
        self._log = log
        self._reconnect = reconnect
        self._start_timeout_s = start_timeout_s
        self._live: _Live | None = None
        self._up = asyncio.Event()  # set while a session is open
        self._closing = False
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._came_up = False  # the current attempt opened a session

    async def start(self) -> list[Tool]:
        """Start (or connect to) the server and list its tools; `ToolLoadError` if it cannot."""
        first: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._maintain(first), name=f"mcp-{self.server}")
        try:
            return await first
        except BaseException:
            await self.aclose()
            raise

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], *, meta: dict[str, Any]
    ) -> CallToolResult:
        """Send one tools/call (waiting for a session if the server is restarting); the caller
        bounds the time. `ToolSourceError` when the server cannot answer it."""
        for attempt in (1, 2):
            live = await self._connected()
            try:
                return await live.session.call_tool(
                    tool, arguments, meta=cast(RequestParamsMeta, meta)
                )
            except MCPError as e:
                if e.code == CONNECTION_CLOSED:
                    self._lose(live)
                    raise ToolSourceError(
                        f"MCP server {self.server!r} went away during the call"
                    ) from None
                if _session_expired(e) and attempt == 1:
                    self._lose(live)  # it restarted and never saw the request: send it again
                    continue
                raise ToolSourceError(
                    f"MCP server {self.server!r} answered {tool!r} with error {e.code}: {e.message}"
                ) from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._lose(live)
                raise ToolSourceError(
                    f"MCP server {self.server!r} went away during the call"
                ) from None
            except Exception as e:  # a reply that breaks the protocol or the tool's own schema
                raise ToolSourceError(
                    f"MCP server {self.server!r} sent an unusable reply for {tool!r}: "
                    f"{type(e).__name__}: {e}"
                ) from e
        raise ToolSourceError(f"MCP server {self.server!r} keeps dropping its session")

    async def aclose(self) -> None:
        """Close the session and stop the server (stdio); waiting calls fail."""
        self._closing = True
        self._closed.set()
        self._up.set()  # wakes calls waiting for a session: they see the connection closing
        if self._live is not None:
            self._live.over.set()  # the owner leaves the session the orderly way
        task, self._task = self._task, None
        if task is None:
            return
        if self._live is None:
            task.cancel()  # starting or waiting to retry: nothing to finish (the SDK still
            # stops a stdio server it started, under cancellation)
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
        if not done:
            self._log.warning("mcp.close_timeout", server=self.server)
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)

    async def _connected(self) -> _Live:
        while True:
            if self._closing:
                raise ToolSourceError(f"MCP server {self.server!r} is shut down")
            live = self._live
            if live is not None and not live.over.is_set():
                return live
            await self._up.wait()

    def _lose(self, live: _Live) -> None:
        """The session `live` is no longer usable: the owner task opens a new one."""
        self._end(live.over)

    def _end(self, over: asyncio.Event) -> None:
        # `_up` is set exactly while the current session is usable: `_connected` relies on it.
        if self._live is not None and self._live.over is over:
            self._up.clear()
        over.set()

    async def _maintain(self, first: asyncio.Future[list[Tool]]) -> None:
        """The owner task: one session after another until closed."""
        try:
            await self._sessions(first)
        finally:
            if not first.done():  # closed (or cancelled) before it was ever up
                first.set_exception(ToolLoadError(f"MCP server {self.server!r} was shut down"))

    async def _sessions(self, first: asyncio.Future[list[Tool]]) -> None:
        failures = 0
        while not self._closing:
            self._came_up = False
            try:
                await self._serve(first)
            except Exception as e:  # noqa: BLE001 - transport or handshake failed (an ExceptionGroup too)
                if not first.done():
                    first.set_exception(self._load_error(e))
                    return
                self._log.warning("mcp.connection_failed", server=self.server, error=_describe(e))
            if self._closing:
                return
            if not first.done():  # ended before it was ever up
                first.set_exception(ToolLoadError(f"MCP server {self.server!r} closed at start"))
                return
            failures = 1 if self._came_up else failures + 1  # count failures in a row
            delay_s = self._reconnect.delay_s(failures)
            self._log.warning(
                "mcp.reconnecting",
                server=self.server,
                transport=self.transport.kind,
                attempt=failures,
                delay_s=round(delay_s, 2),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._closed.wait()

    async def _serve(self, first: asyncio.Future[list[Tool]]) -> None:
        """Open one session and hold it until it ends (or fails)."""
        over = asyncio.Event()
        async with self.transport.open() as (read, write):
            watched = _EndWatch(read, lambda: self._end(over))
            async with ClientSession(watched, write, client_info=_CLIENT) as session:
                with anyio.fail_after(self._start_timeout_s):
                    await session.initialize()
                    tools = await _list_tools(session)
                live = _Live(session=session, over=over)
                self._live = live
                self._came_up = True
                try:
                    if first.done():
                        self.restarts += 1
                        self._log.info(
                            "mcp.reconnected",
                            server=self.server,
                            transport=self.transport.kind,
                            restarts=self.restarts,
                        )
                    else:
                        first.set_result(tools)
                    self._up.set()
                    await over.wait()
                finally:
                    self._up.clear()
                    self._live = None

    def _load_error(self, error: BaseException) -> ToolLoadError:
        hint = self.transport.failure_hint()
        return ToolLoadError(
            f"MCP server {self.server!r} ({self.transport.describe()}) could not be started "
            f"and listed: {_describe(error)}" + (f"; {hint}" if hint else "")
        )


async def _list_tools(session: ClientSession) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise ToolLoadError(f"tools/list did not end after {_MAX_PAGES} pages")


def _session_expired(error: MCPError) -> bool:
    # What the SDK's streamable HTTP client makes of a 404 for a session id the server forgot.
    return error.code == INVALID_REQUEST and error.message == "Session terminated"


def _describe(error: BaseException) -> str:
    """The innermost causes of an (often grouped) failure, in one line."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"
