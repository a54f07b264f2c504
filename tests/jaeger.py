"""A real Jaeger all-in-one (v2, an OpenTelemetry collector with Jaeger's storage and query API)
on free loopback ports, for the trace test, and reading traces back through its query API.

`scripts/install-jaeger.sh` (run by `make setup`) builds the pinned release into .cache/bin;
`JAEGER_BIN` names another binary.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from voice_agent.devstack.processes import ManagedProcess, free_port

VERSION = "v1.76.0"  # keep in step with scripts/install-jaeger.sh
ROOT = Path(__file__).resolve().parents[1]

# Only what the test needs: OTLP over HTTP in, memory storage, the query API, a health check;
# every address on loopback, the collector's own telemetry off (it would take fixed ports).
CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def find_jaeger() -> Path:
    """The Jaeger binary: `JAEGER_BIN`, else the one setup built."""
    given = os.environ.get("JAEGER_BIN")
    path = Path(given) if given else ROOT / ".cache" / "bin" / "jaeger"
    if not path.is_file():
        raise FileNotFoundError(f"no Jaeger at {path}: `make setup` builds it")
    return path


@dataclass(frozen=True)
class Jaeger:
    """A running Jaeger: where spans go and where traces are read."""

    otlp_url: str
    """The OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`)."""
    query_url: str

    async def traces(self, service: str, **tags: str) -> list[dict[str, Any]]:
        """The traces holding a span of `service` with all of `tags`, whole (every span of
        every service), from the query API."""
        params = {"service": service, "tags": json.dumps(tags), "limit": "20"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.query_url}/api/traces", params=params) as resp:
                resp.raise_for_status()
                found = (await resp.json())["data"] or []
            whole = []
            for summary in found:
                async with http.get(f"{self.query_url}/api/traces/{summary['traceID']}") as resp:
                    resp.raise_for_status()
                    whole.extend((await resp.json())["data"])
            return whole


@contextlib.asynccontextmanager
async def jaeger(root: Path) -> AsyncIterator[Jaeger]:
    """Jaeger on free loopback ports until the block ends; its log in `root/jaeger.log`."""
    ports = {name: free_port() for name in ("health", "query", "query_grpc", "otlp")}
    config = root / "jaeger.yaml"
    config.write_text(CONFIG.format(**ports))

    async def ready() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{ports['health']}/status") as resp,
        ):
            return resp.status == 200

    proc = ManagedProcess(
        name="jaeger",
        argv=[str(find_jaeger()), "--config", f"file:{config}"],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=root,
        ready=ready,
        log_file=root / "jaeger.log",
    )
    await proc.start()
    try:
        await proc.wait_ready(60)
        yield Jaeger(
            otlp_url=f"http://127.0.0.1:{ports['otlp']}",
            query_url=f"http://127.0.0.1:{ports['query']}",
        )
    finally:
        await proc.stop(grace_s=1.0)  # its storage is memory: nothing to lose by hurrying it
