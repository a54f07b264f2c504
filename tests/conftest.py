"""Session fixtures: a real LiveKit server, Redis and PostgreSQL on free loopback ports."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from tests.postgres_cluster import INSTALL_HINT, find_postgres_bin, postgres_cluster
from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import free_port, free_udp_range
from voice_agent.devstack.redis_server import redis_process

# The example profile's conversation tests (tests/conversations/*.toml) run as tests.
pytest_plugins = ["voice_agent.textmode.pytest_plugin"]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Undo any logging set-up a test made (e.g. by running the CLI) once it ends."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where session services keep their logs (printed on failure)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
async def livekit_server(artifacts_dir: Path) -> AsyncIterator[LiveKitEndpoint]:
    """A real LiveKit server bound to 127.0.0.1 for the whole test session."""
    key, secret = new_key_pair()
    endpoint = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    proc = livekit_process(
        binary=find_livekit_server(),
        endpoint=endpoint,
        udp_range=free_udp_range(),
        log_file=artifacts_dir / "livekit.log",
    )
    await proc.start()
    try:
        await proc.wait_ready(60)
        yield endpoint
    finally:
        await proc.stop()


@pytest.fixture(scope="session")
async def redis_url(artifacts_dir: Path) -> AsyncIterator[str]:
    """`REDIS_URL` when given, else a real redis-server started on a free loopback port."""
    if given := os.environ.get("REDIS_URL"):
        yield given
        return
    port = free_port()
    proc = redis_process(port=port, data_dir=None, log_file=artifacts_dir / "redis.log")
    await proc.start()
    try:
        await proc.wait_ready(30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        await proc.stop()


@pytest.fixture(scope="session")
def postgres_url(artifacts_dir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth), for the session."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.fail(INSTALL_HINT)
    with postgres_cluster(bin_dir, artifacts_dir / "postgres.log") as url:
        yield url
