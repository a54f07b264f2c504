"""Start a Redis server on loopback for the dev stack and the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis.asyncio as aioredis

from voice_agent.datadir import private_dir
from voice_agent.devstack.processes import ManagedProcess
from voice_agent.exceptions import ConfigError


def find_redis_server() -> Path:
    """The redis-server binary on PATH (Debian's package), or a clear error."""
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError(
            "redis-server not found; run `make setup` (installs Debian's redis-server)"
        )
    return Path(found)


def redis_process(
    *, port: int, data_dir: Path | None, log_file: Path | None = None
) -> ManagedProcess:
    """A managed redis-server on 127.0.0.1:`port`; append-only files when `data_dir` is set."""
    argv = [
        str(find_redis_server()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    if data_dir is not None:
        private_dir(data_dir)
        argv += ["--dir", str(data_dir.resolve()), "--appendonly", "yes"]
    else:
        argv += ["--appendonly", "no"]
    url = f"redis://127.0.0.1:{port}/0"

    async def ready() -> bool:
        client = aioredis.from_url(url, socket_connect_timeout=1)  # type: ignore[no-untyped-call]  # redis 5 (arq needs <6)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    return ManagedProcess(name="redis", argv=argv, ready=ready, log_file=log_file)
