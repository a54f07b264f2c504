"""A real call, through the agent's hand-over and the post-call worker, to a report staff read."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.chromium import headless_chromium
from tests.integration.postcall_support import (
    eventually,
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
    ticket_rows,
)
from tests.integration.stack import speech
from voice_agent.agent.runner import build_call_runner
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.postcall.handover import PostCallSink
from voice_agent.providers.factory import build_providers
from voice_agent.server.app import create_app
from voice_agent.testing.openai_script import ChatReply, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

QUESTION = "I was charged twice for March."
ANSWER = "I am sorry about that; I will ask the billing team to refund it."
STAFF = {"Authorization": "Bearer e2e-staff-token-0123456789abcdef"}


async def test_real_call_becomes_a_report_in_the_staff_api_and_page(
    livekit_server: LiveKitEndpoint, redis_url: str, tmp_path: Path
) -> None:
    """Caller speaks, agent answers and hangs up into the queue; staff then read the report,
    through the API and on the reports page in Chromium."""
    url = await fresh_redis(redis_url)
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER), ChatReply(text=report_json())],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    port = free_port()
    async with models, contextlib.AsyncExitStack() as stack:
        settings = postcall_settings(
            tmp_path,
            url,
            models.base_url,
            livekit_url=livekit_server.ws_url,
            livekit_api_key=livekit_server.api_key,
            livekit_api_secret=livekit_server.api_secret,
            port=port,
            staff_token=STAFF["Authorization"].removeprefix("Bearer "),
            token_rate_limit="1000/minute",
            stt="openai",
            tts="openai",
            stt_language="en",
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        providers = build_providers(settings)
        stack.push_async_callback(providers.aclose)
        sink = await stack.enter_async_context(PostCallSink.from_settings(settings))
        entrypoint, tool_kit = await build_call_runner(settings, providers, sink=sink)
        stack.push_async_callback(tool_kit.aclose)
        stack.push_async_callback(entrypoint.aclose)
        worker = AgentWorker(
            settings=settings, entrypoint=entrypoint, options=WorkerOptions(max_jobs=2)
        )
        await stack.enter_async_context(worker)
        await worker.wait_registered()
        await stack.enter_async_context(running_worker(settings, fast_options(settings)))
        service = f"http://127.0.0.1:{port}"
        caller = SimulatedCaller(
            options=CallerOptions(url=service, utterances=(await speech(QUESTION),))
        )
        result = await caller.run()
        assert result["ok"], result
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=STAFF))

        async def reported() -> dict[str, Any] | None:
            async with http.get(f"{service}/api/calls?status=done") as resp:
                items = (await resp.json())["items"]
            if not items:
                return None
            async with http.get(f"{service}/api/calls/{items[0]['call_id']}") as resp:
                return dict(await resp.json())

        call = await eventually(reported, timeout_s=30, what="the call's report")
        async with asyncio.timeout(120):  # a hang fails here, and the workers above stop
            shown = await _read_on_the_reports_page(f"{service}/reports", call["call_id"])
    assert shown["summary"] == "The caller was charged twice for March; a refund was requested."
    assert QUESTION in shown["transcript"]
    assert ANSWER in shown["transcript"]
    report = call["report"]
    assert call["source"] == "agent"
    assert call["record"]["complete"]
    assert [t["text"] for t in call["record"]["transcript"] if t["speaker"] == "user"] == [QUESTION]
    assert report["report"]["ticket"]["title"] == "Duplicate charge on invoice 4471"
    assert not report["needs_review"]
    assert {i["name"] for i in call["integrations"] if i["ok"]} == {"email_draft", "ticket"}
    assert call["job_history"][-1]["event"] == "done"
    assert ticket_rows(tmp_path, call["call_id"]) == 1


async def _read_on_the_reports_page(url: str, call_id: str) -> dict[str, str]:
    """Sign in to /reports as staff, open the call; the summary and transcript it shows."""
    async with headless_chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(url)
        await page.get_by_label("Staff token").fill(STAFF["Authorization"].removeprefix("Bearer "))
        await page.get_by_role("button", name="Sign in").click()
        await page.locator(f'tr[data-call-id="{call_id}"] a').click()
        detail = page.locator("#detail")
        await detail.locator(".transcript li").first.wait_for()
        await detail.get_by_text("Draft — not sent.").wait_for()
        return {
            "summary": await detail.locator(".summary-text").inner_text(),
            "transcript": await detail.locator(".transcript").inner_text(),
        }
