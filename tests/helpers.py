"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voice_agent import tracing
from voice_agent.settings import Settings

AppClient = TestClient[web.Request, web.Application]
"""A test client of one of our aiohttp applications."""

TEST_API_KEY = "testkey"
TEST_API_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def make_settings(**overrides: Any) -> Settings:
    """Settings that ignore any `.env` file, with test credentials unless overridden."""
    values: dict[str, Any] = {
        "livekit_url": "ws://127.0.0.1:9",
        "livekit_api_key": TEST_API_KEY,
        "livekit_api_secret": TEST_API_SECRET,
        "redis_url": None,
        "data_dir": _scratch_data_dir(),  # never the checkout's .data
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the block, its spans kept in memory (the SDK's own exporter); off after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def strip_project_env(env: dict[str, str]) -> dict[str, str]:
    """A copy of `env` without this project's settings, so a child starts from defaults."""
    prefixes = ("VOICE_AGENT_", "LIVEKIT_", "REDIS_URL", "OPENAI_", "OTEL_")
    return {k: v for k, v in env.items() if not k.startswith(prefixes)}


@cache
def _scratch_data_dir() -> Path:
    """One temporary data directory for the test session's default settings."""
    return Path(tempfile.mkdtemp(prefix="voice-agent-test-data-"))


def raw_http(port: int, request: bytes, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send `request` verbatim to 127.0.0.1:`port` (HTTP/1.1, `Connection: close` expected);
    the status code and the body. For bytes no HTTP client library would send."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
