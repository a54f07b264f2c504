"""The `voice-agent` command (also `python -m voice_agent`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from voice_agent import __version__
from voice_agent.exceptions import ConfigError
from voice_agent.logging import configure_logging
from voice_agent.settings import LogFormat, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent", description="Self-hosted real-time voice agent server on LiveKit."
    )
    parser.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev", help="run the whole stack on this machine (LiveKit, Redis, services)"
    )
    dev.add_argument("--port", type=int, help="token service port (VOICE_AGENT_PORT)")

    serve = sub.add_parser("serve", help="run the token service, web client and health endpoints")
    serve.add_argument("--host", help="bind address (VOICE_AGENT_HOST)")
    serve.add_argument("--port", type=int, help="port (VOICE_AGENT_PORT)")
    return parser


def _settings(args: argparse.Namespace, **defaults: Any) -> Settings:
    overrides = {
        k: v
        for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)))
        if v is not None
    }
    return load_settings(**defaults, **overrides)


def _describe(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for e in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "dev" and settings.log_format is LogFormat.AUTO:
            settings = settings.model_copy(update={"log_format": LogFormat.CONSOLE})
        configure_logging(settings)
        if args.command == "dev":
            from voice_agent.devstack.supervisor import run_dev

            return asyncio.run(run_dev(settings))
        if args.command == "serve":
            from voice_agent.server.app import serve

            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_until_signal(serve(settings)))
            return 0
    except ValidationError as e:
        print(_describe(e), file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    return 2


async def _until_signal(main_coro: Any) -> None:
    """Run `main_coro` until SIGINT or SIGTERM, then cancel it so it cleans up."""
    import signal

    task = asyncio.ensure_future(main_coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
