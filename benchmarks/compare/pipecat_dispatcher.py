"""Starts a Pipecat bot process for each new benchmark room: Pipecat's deployment shape here.

Pipecat has no worker protocol of its own: a room gets a bot when something starts one for it.
This dispatcher is that something: LiveKit's `room_started` webhook (signed; verified with the
API key pair) for a room named with BENCH_ROOM_PREFIX starts `pipecat_bot.py` with a bot token
granted as Pipecat's own runner helper grants it (`agent=True`), plus the participant kind
`agent`, which is what LiveKit clients (and our simulated caller) read to know an agent joined.
The bots are its child processes, so the benchmark counts their memory with its own.

`python pipecat_dispatcher.py PORT` serves `POST /webhook` and `GET /healthz` on 127.0.0.1 until
SIGTERM, then stops its bots. Runs in the Pipecat venv. Not product code: a benchmark fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from livekit import api

BOT = Path(__file__).with_name("pipecat_bot.py")


class Dispatcher:
    """Verifies webhooks and owns the bot processes it starts."""

    def __init__(self) -> None:
        env = os.environ
        self._url, self._key, self._secret = (
            env["LIVEKIT_URL"],
            env["LIVEKIT_API_KEY"],
            env["LIVEKIT_API_SECRET"],
        )
        self._prefix = env["BENCH_ROOM_PREFIX"]
        self._receiver = api.WebhookReceiver(api.TokenVerifier(self._key, self._secret))
        self._bots: dict[str, asyncio.subprocess.Process] = {}
        self._reapers: set[asyncio.Task[None]] = set()

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event = self._receiver.receive(body, request.headers.get("Authorization", ""))
        except Exception as e:  # noqa: BLE001 - livekit-api raises plain Exceptions; any is a 401
            return web.json_response({"error": "unauthorized", "detail": str(e)}, status=401)
        room = event.room.name
        if (
            event.event == "room_started"
            and room.startswith(self._prefix)
            and room not in self._bots
        ):
            await self._start_bot(room)
        return web.json_response({"ok": True})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"bots": len(self._bots)})

    async def _start_bot(self, room: str) -> None:
        token = (
            api.AccessToken(self._key, self._secret)
            .with_identity("pipecat-bot")
            .with_name("Pipecat bot")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
            .to_jwt()
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(BOT), self._url, room, token,
        )  # fmt: skip
        self._bots[room] = proc
        reaper = asyncio.create_task(self._reap(room, proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, room: str, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._bots.pop(room, None)

    async def stop_bots(self) -> None:
        for proc in list(self._bots.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in list(self._bots.values()):
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


async def main(port: int) -> None:
    dispatcher = Dispatcher()
    app = web.Application()
    app.router.add_post("/webhook", dispatcher.webhook)
    app.router.add_get("/healthz", dispatcher.healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await dispatcher.stop_bots()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
