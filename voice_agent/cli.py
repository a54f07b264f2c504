"""The `voice-agent` command (also `python -m voice_agent`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voice_agent import __version__, tracing
from voice_agent.exceptions import ConfigError, ToolLoadError
from voice_agent.logging import configure_logging
from voice_agent.settings import LogFormat, Settings, env_name, load_settings


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

    worker = sub.add_parser(
        "worker", help="run the agent worker (joins calls dispatched by LiveKit)"
    )
    worker.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N|auto",
        help="agent worker processes under this command, each registered with LiveKit: a number, "
        "or auto for one per usable core (default 1); child i serves metrics on "
        "VOICE_AGENT_WORKER_METRICS_PORT + i",
    )
    postcall = sub.add_parser(
        "postcall", help="run the post-call worker (reports, tickets, webhooks from Redis)"
    )
    postcall.add_argument(
        "--attempt-timeout",
        type=float,
        default=None,
        help="seconds one try of a call may take; a killed worker's job reruns this long "
        "plus twice the database timeout plus 20 s after it started "
        "(default: VOICE_AGENT_POSTCALL_ATTEMPT_TIMEOUT_S, 120)",
    )

    call = sub.add_parser(
        "call", help="simulated caller: join like a browser, speak, print a JSON result"
    )
    call.add_argument("--url", default=None, help="token service URL (default: the local one)")
    call.add_argument("--audio", type=Path, action="append", default=[], help="WAV to speak")
    call.add_argument("--say", action="append", default=[], help="text to speak (espeak-ng)")
    call.add_argument(
        "--type",
        action="append",
        default=[],
        help="a chat message to type (lk.chat) after the greeting, before speaking",
    )
    call.add_argument("--interrupt-after-ms", type=int, help="barge in this long into each reply")
    call.add_argument("--record", type=Path, help="write the agent's audio to this WAV")
    call.add_argument("--bearer", help="Bearer token for a token service in jwt mode")
    call.add_argument("--no-greeting", action="store_true", help="do not wait for a greeting")
    call.add_argument("--turn-timeout", type=float, default=30.0, help="seconds to wait per turn")
    call.add_argument(
        "--confirm",
        choices=["yes", "no"],
        help="answer the agent's confirmation requests (default: leave them unanswered)",
    )

    chat = sub.add_parser(
        "chat",
        help="talk to the agent profile in the terminal: text only, same tools and guardrails",
    )
    chat.add_argument(
        "--post-call",
        action="store_true",
        help="hand the call record to the post-call queue (needs REDIS_URL) instead of "
        "keeping it under <data dir>/chat/records",
    )

    test = sub.add_parser(
        "test",
        help="run conversation test files against the agent profile (text mode by default)",
    )
    test.add_argument("paths", nargs="+", type=Path, help="conversation files, or directories")
    test.add_argument(
        "--voice",
        action="store_true",
        help="run each through a real call: a LiveKit server of its own, the worker, speech",
    )
    test.add_argument(
        "--model",
        choices=["auto", "settings"],
        default="auto",
        help="auto: files that script the model use the scripted server, others the "
        "configured model; settings: the configured model for every file",
    )

    sub.add_parser(
        "fetch-turn-model",
        help="fetch the Smart Turn v3.2 end-of-turn model (BSD-2-Clause) from the pipecat-ai "
        "wheel on PyPI, check its sha256 and keep it in the cache (VOICE_AGENT_SMART_TURN_MODEL)",
    )

    tools = sub.add_parser("tools", help="list the registered tools and their policy")
    tools.add_argument("--json", action="store_true", help="print the list as JSON")
    return parser


def _processes(value: str) -> int:
    from voice_agent.agent.worker_pool import resolve_processes

    try:
        return resolve_processes(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or auto, got {value!r}"
        ) from None


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
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0] in Settings.model_fields:  # name the variable the user sets
            loc[0] = env_name(loc[0])
        where = ".".join(loc) or "settings"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "dev" and settings.log_format is LogFormat.AUTO:
            settings = settings.model_copy(update={"log_format": LogFormat.CONSOLE})
        if args.command in _QUIET and "log_level" not in settings.model_fields_set:
            settings = settings.model_copy(update={"log_level": "warning"})  # the output is theirs
        configure_logging(settings)
        if args.command in _SERVICES:
            _private_data(settings)
        if args.command == "dev":
            from voice_agent.devstack.supervisor import run_dev

            return asyncio.run(run_dev(settings))
        if args.command == "worker":
            if args.processes > 1:  # each worker process it starts traces on its own
                from voice_agent.agent.worker_pool import run_worker_pool

                return asyncio.run(run_worker_pool(settings, args.processes))
            with tracing.exporting(settings, process="worker"):
                asyncio.run(_worker(settings))
            return 0
        if args.command == "postcall":
            from voice_agent.postcall.worker import PostCallOptions, run_postcall

            overrides = {}
            if args.attempt_timeout is not None:
                overrides["attempt_timeout_s"] = max(1.0, args.attempt_timeout)
            options = PostCallOptions.from_settings(settings, **overrides)
            with tracing.exporting(settings, process="postcall"):
                asyncio.run(run_postcall(settings, options=options))
            return 0
        if args.command == "call":
            code = asyncio.run(_call(args, settings))
            # LiveKit's native library can abort while the interpreter tears down its callbacks
            # (seen under load); the call is over and its result printed, so leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if args.command == "tools":
            return _tools(args, settings)
        if args.command == "fetch-turn-model":
            return _fetch_turn_model(settings)
        if args.command == "chat":
            try:
                return asyncio.run(_chat(args, settings))
            except KeyboardInterrupt:  # the session was closed and recorded on the way out
                return 130
        if args.command == "test":
            code = asyncio.run(_test(args, settings))
            if args.voice:  # as after `call`: LiveKit's native library may abort at teardown
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code
        if args.command == "serve":
            from voice_agent.server.app import serve

            with (
                contextlib.suppress(KeyboardInterrupt),
                tracing.exporting(settings, process="serve"),
            ):
                asyncio.run(_until_signal(serve(settings)))
            return 0
    except ValidationError as e:
        print(_describe(e), file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    except ToolLoadError as e:  # the worker's tools (modules or MCP servers) did not load
        print(f"cannot load tools: {e}", file=sys.stderr)
        return 2
    return 2


async def _worker(settings: Settings) -> None:
    from voice_agent.agent.runner import run_worker

    if not settings.redis_url:
        await run_worker(settings)  # records as JSON files under the data dir
        return
    from voice_agent.postcall.handover import PostCallSink
    from voice_agent.postcall.recovery import JournalRecovery

    # With Redis, finished calls go to the post-call queue (spooled first, so none is lost),
    # and so do this host's orphaned journals, swept at start-up and every interval.
    sink = PostCallSink.from_settings(settings)
    recovery = JournalRecovery(
        directory=settings.data_dir / "calls",
        sink=sink,
        interval_s=settings.journal_recovery_interval_s,
    )
    await run_worker(settings, sink=sink, services=[recovery])


# The commands that keep personal data (transcripts) under the data dir.
_SERVICES = frozenset({"dev", "serve", "worker", "postcall", "chat"})
# The commands whose standard output is the user's: logs below warnings stay off stderr too,
# unless VOICE_AGENT_LOG_LEVEL says otherwise.
_QUIET = frozenset({"chat", "test"})


def _private_data(settings: Settings) -> None:
    """Files this process and its children create are the owner's only; the data dir 0700."""
    from voice_agent.datadir import UMASK, private_dir

    os.umask(UMASK)
    private_dir(settings.data_dir)


def _fetch_turn_model(settings: Settings) -> int:
    from voice_agent.exceptions import TurnModelError
    from voice_agent.pipeline.smart_turn_weights import fetch_turn_model, model_path

    target = model_path(settings)
    try:
        fetched = fetch_turn_model(target)
    except TurnModelError as e:
        print(f"cannot fetch the turn model: {e}", file=sys.stderr)
        return 1
    print(f"turn model {'fetched to' if fetched else 'already at'} {target}")
    return 0


def _tools(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.exceptions import ToolError

    try:
        described, allowed_any = asyncio.run(_describe_tools(settings))
    except ToolError as e:
        print(f"cannot load tools: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    if not described:
        print(f"no tools in {settings.tools_path}")
        return 0
    width = max(len(d["name"]) for d in described)
    sources = [_source_label(d["source"]) for d in described]
    source_width = max(len(s) for s in sources)
    print(
        f"{'NAME':<{width}}  {'TIMEOUT':>7}  {'POLICY':<20}  {'SOURCE':<{source_width}}  ARGUMENTS"
    )
    for d, source in zip(described, sources, strict=True):
        policy = "destructive, confirm" if d["destructive"] else "confirm" if d["confirm"] else "-"
        if d.get("background"):
            policy = "background" if policy == "-" else f"{policy}, background"
        required = set(d["parameters"].get("required", []))
        names = [f"{n}*" if n in required else n for n in d["parameters"].get("properties", {})]
        print(
            f"{d['name']:<{width}}  {d['timeout_s']:>5g} s  {policy:<20}  "
            f"{source:<{source_width}}  {', '.join(names)}"
        )
        print(f"{'':<{width}}  {d['description']}")
        if d["function_name"] != d["name"]:
            print(f"{'':<{width}}  (the model calls it {d['function_name']})")
    print(f"\n{len(described)} tools (* required argument)")
    if allowed_any:
        print(
            "the agent profile allows: " + ", ".join(d["name"] for d in described if d["allowed"])
        )
    return 0


async def _describe_tools(settings: Settings) -> tuple[list[dict[str, Any]], bool]:
    """Every tool the profile's sources offer, described (MCP servers started and stopped)."""
    from voice_agent.profile import load_profile
    from voice_agent.tooling.sources import ToolSources

    profile = load_profile(settings)
    async with await ToolSources.for_profile(settings, profile, all_python=True) as sources:
        described = sources.describe(settings.tool_timeout_s, allowed=profile.tools.allowed)
    return described, bool(profile.tools.allowed)


def _source_label(source: dict[str, Any]) -> str:
    if source["kind"] == "mcp":
        return f"mcp {source['server']} ({source['transport']})"
    return str(source.get("file") or "-")


async def _chat(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.call_record import FileRecordSink
    from voice_agent.profile import load_profile
    from voice_agent.textmode.terminal import run_chat

    profile = load_profile(settings)
    if not args.post_call:  # kept apart from the worker's journals, which go to the queue
        chat_dir = settings.data_dir / "chat"
        sink = FileRecordSink(chat_dir / "records")
        return await run_chat(settings, profile, sink=sink, journal_dir=chat_dir / "calls")
    if not settings.redis_url:
        raise ConfigError("chat --post-call needs REDIS_URL (the post-call queue)")
    from voice_agent.postcall.handover import PostCallSink

    # Journaled where the worker's orphan recovery finds it, should the chat die midway.
    async with PostCallSink.from_settings(settings) as queue_sink:
        return await run_chat(
            settings, profile, sink=queue_sink, journal_dir=settings.data_dir / "calls"
        )


async def _test(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.textmode.conversations import conversation_files
    from voice_agent.textmode.runner import Mode, run_files

    paths = conversation_files(args.paths)
    if not paths:
        print("no conversation files found", file=sys.stderr)
        return 2

    def write(line: str) -> None:
        print(line, flush=True)

    mode: Mode = "voice" if args.voice else "text"
    reports = await run_files(paths, settings, mode=mode, model=args.model, write=write)
    return 0 if all(r.passed for r in reports) else 1


async def _call(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.caller.audio import read_wav, synthesize
    from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller

    utterances = [read_wav(p) for p in args.audio] + [await synthesize(t) for t in args.say]
    options = CallerOptions(
        url=args.url or f"http://{settings.host}:{settings.port}",
        utterances=tuple(utterances),
        interrupt_after_ms=args.interrupt_after_ms,
        record=args.record,
        bearer_token=args.bearer,
        wait_for_greeting=not args.no_greeting,
        turn_timeout_s=args.turn_timeout,
        confirm=None if args.confirm is None else args.confirm == "yes",
        typed=tuple(args.type),
    )
    result = await SimulatedCaller(options=options).run()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


async def _until_signal(main_coro: Any) -> None:
    """Run `main_coro` until SIGINT or SIGTERM, then cancel it so it cleans up."""
    import signal

    task = asyncio.ensure_future(main_coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
