"""One registered websocket to LiveKit's `/agent` endpoint, speaking the worker protocol.

The protocol is protobuf over binary websocket frames (`livekit.protocol.agent`). The worker
authenticates with a JWT carrying the `agent` grant, sends `register` first, and the server's first
message is the register response with the worker id. Everything after that is the worker's
business (see `worker.py`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent as agent_pb

from voice_agent.exceptions import ConfigError, DependencyUnavailableError

# Long enough for any connect; the server checks it only during the websocket handshake.
_WORKER_TOKEN_TTL = timedelta(minutes=10)
# Receive timeouts are per call (the ping deadline); closing a dead socket must not hang.
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)


def websocket_url(url: str) -> str:
    """`url` with an http(s) scheme turned into ws(s)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))


def agent_endpoint(url: str) -> str:
    """The worker endpoint of the LiveKit server at `url`."""
    parts = urlsplit(websocket_url(url))
    path = parts.path.rstrip("/") + "/agent"
    return urlunsplit(parts._replace(path=path, query="", fragment=""))


def worker_token(api_key: str, api_secret: str) -> str:
    """A short-lived JWT with the `agent` grant, as `/agent` requires."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_grants(api.VideoGrants(agent=True))
        .with_ttl(_WORKER_TOKEN_TTL)
        .to_jwt()
    )


class WorkerConnection:
    """A websocket to `/agent` on which the worker is registered."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, registration: agent_pb.RegisterWorkerResponse
    ) -> None:
        self._ws = ws
        self._send_lock = asyncio.Lock()
        self.worker_id = registration.worker_id
        self.server_version = registration.server_info.version
        self.server_node = registration.server_info.node_id

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        request: agent_pb.RegisterWorkerRequest,
        timeout_s: float,
    ) -> WorkerConnection:
        """Connect and register; `DependencyUnavailableError` when LiveKit is not there."""
        endpoint = agent_endpoint(url)
        headers = {"Authorization": f"Bearer {worker_token(api_key, api_secret)}"}
        try:
            async with asyncio.timeout(timeout_s):
                ws = await http.ws_connect(
                    endpoint, headers=headers, autoping=True, timeout=_WS_TIMEOUT
                )
                try:
                    await ws.send_bytes(
                        agent_pb.WorkerMessage(register=request).SerializeToString()
                    )
                    first = await _read(ws)
                except BaseException:
                    await ws.close()
                    raise
        except aiohttp.WSServerHandshakeError as e:
            if e.status in (401, 403):
                raise ConfigError(
                    f"LiveKit at {url} rejected the worker's credentials (HTTP {e.status}); "
                    "check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
                ) from e
            raise DependencyUnavailableError(
                f"LiveKit at {url} refused the worker websocket (HTTP {e.status})"
            ) from e
        except TimeoutError as e:  # before OSError, of which it is a subclass
            raise DependencyUnavailableError(
                f"LiveKit at {url} did not register the worker within {timeout_s:g} s"
            ) from e
        except (aiohttp.ClientError, OSError) as e:
            raise DependencyUnavailableError(f"cannot reach LiveKit at {url}: {e}") from e
        if not first.HasField("register"):
            await ws.close()
            raise DependencyUnavailableError(
                f"LiveKit sent {first.WhichOneof('message')!r} before the register response"
            )
        return cls(ws, first.register)

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, message: agent_pb.WorkerMessage) -> None:
        """Send one message; `DependencyUnavailableError` when the socket is gone."""
        payload = message.SerializeToString()
        try:
            async with self._send_lock:
                await self._ws.send_bytes(payload)
        except (ConnectionError, aiohttp.ClientError) as e:
            raise DependencyUnavailableError(f"worker connection lost while sending: {e}") from e

    async def receive(self, *, timeout_s: float) -> agent_pb.ServerMessage:
        """The next server message; `DependencyUnavailableError` on close or `timeout_s` silence."""
        try:
            return await _read(self._ws, timeout_s=timeout_s)
        except TimeoutError as e:
            raise DependencyUnavailableError(
                f"no message from LiveKit for {timeout_s:g} s (pings unanswered)"
            ) from e

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        await self._ws.close()


async def _read(
    ws: aiohttp.ClientWebSocketResponse, *, timeout_s: float | None = None
) -> agent_pb.ServerMessage:
    """Read frames until a server message arrives; raise when the socket ends."""
    while True:
        frame = await ws.receive(timeout=timeout_s)
        if frame.type is aiohttp.WSMsgType.BINARY:
            message = agent_pb.ServerMessage()
            try:
                message.ParseFromString(frame.data)
            except DecodeError as e:
                raise DependencyUnavailableError("LiveKit sent an undecodable message") from e
            return message
        if frame.type is aiohttp.WSMsgType.TEXT:
            continue  # we speak protobuf, so the server answers in binary; ignore anything else
        reason = f" ({ws.close_code})" if ws.close_code is not None else ""
        raise DependencyUnavailableError(f"LiveKit closed the worker connection{reason}")
