"""Start the real LiveKit server on loopback, from the pinned binary that setup installs."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.exceptions import ConfigError

# Keep in step with scripts/install-livekit-server.sh.
LIVEKIT_SERVER_VERSION = "v1.13.5"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEV_CONFIG = PROJECT_ROOT / "deploy" / "livekit.dev.yaml"
CACHED_BINARY = PROJECT_ROOT / ".cache" / "bin" / "livekit-server"


def find_livekit_server(configured: Path | None = None) -> Path:
    """The LiveKit server binary: `LIVEKIT_SERVER_BIN`, the project cache, or `PATH`."""
    candidates = [configured] if configured else [CACHED_BINARY]
    on_path = shutil.which("livekit-server")
    if not configured and on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate and candidate.is_file():
            return candidate
    raise ConfigError(
        f"LiveKit server binary not found (looked at {', '.join(map(str, candidates))}); "
        "run `make setup`, or set LIVEKIT_SERVER_BIN"
    )


@dataclass(frozen=True)
class LiveKitEndpoint:
    """Where a running LiveKit server listens and the key pair it accepts."""

    port: int
    api_key: str
    api_secret: str = field(repr=False)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def new_key_pair() -> tuple[str, str]:
    """A fresh API key and secret for a development LiveKit server."""
    return f"dev{secrets.token_hex(6)}", secrets.token_urlsafe(32)


def render_config(
    *,
    port: int,
    tcp_port: int,
    udp_range: tuple[int, int],
    webhook_url: str | None,
    api_key: str,
    base: Path = DEV_CONFIG,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """The dev config with this run's ports (and webhook target) filled in, and any top-level
    `overrides` (a multi-node run adds `redis`, `region` and `node_selector`)."""
    config: dict[str, Any] = yaml.safe_load(base.read_text())
    config["port"] = port
    config["rtc"]["tcp_port"] = tcp_port
    config["rtc"]["port_range_start"], config["rtc"]["port_range_end"] = udp_range
    if webhook_url:
        config["webhook"] = {"api_key": api_key, "urls": [webhook_url]}
    config.update(overrides or {})
    return yaml.safe_dump(config, sort_keys=False)


def livekit_process(
    *,
    binary: Path,
    endpoint: LiveKitEndpoint,
    tcp_port: int | None = None,
    udp_range: tuple[int, int] = (50000, 50200),
    webhook_url: str | None = None,
    log_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    name: str = "livekit",
) -> ManagedProcess:
    """A managed LiveKit server bound to 127.0.0.1 with the given key pair."""
    config = render_config(
        port=endpoint.port,
        tcp_port=tcp_port or free_port(),
        udp_range=udp_range,
        webhook_url=webhook_url,
        api_key=endpoint.api_key,
        overrides=overrides,
    )

    async def ready() -> bool:
        timeout = aiohttp.ClientTimeout(total=1)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(endpoint.http_url) as resp,
        ):
            return resp.status == 200

    return ManagedProcess(
        name=name,
        argv=[str(binary), "--config-body", config],
        env={"LIVEKIT_KEYS": f"{endpoint.api_key}: {endpoint.api_secret}", "PATH": "/usr/bin:/bin"},
        ready=ready,
        log_file=log_file,
    )
