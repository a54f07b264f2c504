"""Token endpoint throughput and latency on one core.

Starts `voice-agent serve` pinned to CPU 0 (production settings: anonymous auth, JSON logs at info,
rate limit raised out of the way), drives `POST /api/voice-token` from wrk pinned to CPU 1 over
loopback, prints the figures and writes them to docs/benchmarks.md.
Target (issue 2): at least 1,500 tokens/s on one core with p99 at most 20 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_section  # noqa: E402
from voice_agent.devstack.processes import free_port  # noqa: E402

WRK_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'
)


def _wait_healthy(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"token service did not come up at {url}")


def _to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, *, connections: int, seconds: int) -> dict[str, float]:
    """One wrk run; requests/s and latency percentiles in ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        figures[f"p{pct}"] = _to_ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")

    port = free_port()
    env = dict(os.environ)
    env.update(
        LIVEKIT_API_KEY="benchkey",
        LIVEKIT_API_SECRET="bench-secret-0123456789abcdefghijklmnop",
        VOICE_AGENT_PORT=str(port),
        VOICE_AGENT_TOKEN_RATE_LIMIT="100000000/minute",
        VOICE_AGENT_LOG_FORMAT="json",
        VOICE_AGENT_LOG_LEVEL="info",
    )
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "voice_agent", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{base}/healthz")
        run_wrk(f"{base}/api/voice-token", connections=4, seconds=2)  # warm-up
        rows = []
        for conns in args.connections:
            f = run_wrk(f"{base}/api/voice-token", connections=conns, seconds=args.seconds)
            rows.append((conns, f))
            print(
                f"connections={conns:3d}  {f['rps']:8.0f} tokens/s  p50 {f['p50']:.2f} ms  "
                f"p90 {f['p90']:.2f} ms  p99 {f['p99']:.2f} ms  non-2xx {f['errors']:.0f}"
            )
    finally:
        server.terminate()
        server.wait(10)

    table = [
        "| connections | tokens/s | p50 ms | p90 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {c} | {f['rps']:.0f} | {f['p50']:.2f} | {f['p90']:.2f} | {f['p99']:.2f} | "
        f"{f['errors']:.0f} |"
        for c, f in rows
    ]
    write_section(
        "Token endpoint",
        f"`benchmarks/token_throughput.py`: `voice-agent serve` pinned to one core (CPU 0), JSON "
        f"logs at info, wrk on the other core, {args.seconds} s per row, `POST /api/voice-token` "
        "with body `{}`. Target: at least 1,500 tokens/s on one core with p99 at most 20 ms.",
        "\n".join(table),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
