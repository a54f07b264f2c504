"""The web client in real Chromium against the real stack: a whole call, and a cut connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.client_page import ClientPage, participants_named, wait_until_gone
from tests.browser.conftest import QUESTION, Launch
from tests.browser.tcp_proxy import CuttableProxy
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI
from voice_agent.tooling.tickets import TicketStore

ANSWER = "We are open from nine to five, Monday to Friday."
GREETING = "Hello! How can I help you today?"
ROOT = Path(__file__).resolve().parents[2]
TICKET_PROMPT = "Open a normal priority support ticket titled 'Opening hours question'?"
AFTER_TICKET = "I have opened a ticket for you."
PROFILE = """
[tools]
allowed = ["create_ticket"]
[client_actions]
allowed = ["request_confirm"]
"""

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_full_call_shows_captions_and_states_and_ends_cleanly(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, question_wav: Path
) -> None:
    """The page's microphone asks, the agent answers and files a ticket the user confirms in the
    page's dialog; captions, states, one ticket, then nothing left."""
    ticket = ScriptedToolCall(
        name="create_ticket",
        arguments=json.dumps(
            {"title": "Opening hours question", "description": "Asked for the opening hours."}
        ),
    )
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER, tool_calls=[ticket]), ChatReply(text=AFTER_TICKET)],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE)
    async with (
        models,
        voice_stack(
            livekit_server, tmp_path, models=models, profile=profile, tools_path=ROOT / "tools"
        ) as stack,
    ):
        browser = await launch_chromium(microphone=question_wav)
        client = await ClientPage.open(browser, stack.url)
        await client.screenshot("client-idle.png")

        await client.start_call()
        await client.wait_state("in_call")
        await client.wait_caption("agent", GREETING)
        await client.page.wait_for_function(
            "() => document.getElementById('mic-level').value > 0.3"
        )  # the question is heard by the meter
        await client.wait_caption("user", QUESTION, timeout_ms=30_000)
        prompt = await client.answer_confirmation(accept=True, screenshot="client-confirm.png")
        assert prompt == TICKET_PROMPT
        said = f"{ANSWER} {TICKET_PROMPT} Please confirm on your screen. {AFTER_TICKET}"
        await client.wait_caption("agent", said, timeout_ms=30_000)
        await client.wait_agent_state("listening")
        await client.screenshot("client-in-call.png")
        # The page's microphone recording from before the agent subscribed reached the agent.
        [journal] = list((tmp_path / "calls").glob("*.jsonl"))
        lines = [json.loads(line).get("d", {}) for line in journal.read_text().splitlines()]
        [buffered] = [d for d in lines if d.get("event") == "pre_connect_audio"]
        assert buffered["data"]["seconds"] > 0, buffered
        [created] = TicketStore.in_data_dir(tmp_path).tickets()
        assert created.title == "Opening hours question"
        confirmations = [r for r in await client.audit() if r["action"] == "request_confirm"]
        assert [r["outcome"] for r in confirmations] == ["asked", "confirmed"], confirmations

        states = await client.agent_states()
        assert states[0] in ("waiting", "initializing"), states
        answer_states = states[states.index("thinking") - 1 :]
        assert answer_states[:3] == ["listening", "thinking", "speaking"], states
        assert await client.audio_elements() == 1  # the agent's voice
        [token] = client.tokens
        assert await participants_named(livekit_server, token["identity"]) == [token["room"]]

        await client.end_call()
        await client.wait_state("idle")
        await wait_until_gone(livekit_server, token["identity"])
        assert await client.page.text_content("#agent-state") == "Not in a call"
        assert await client.audio_elements() == 0
        assert set(await client.microphone_tracks()) == {"ended"}
        assert await client.page.is_enabled("#start-call")
        assert await client.csp_violations() == []
        assert client.console_errors == []


async def test_cut_connection_reconnects_and_the_call_goes_on(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """LiveKit unreachable past the SDK's resume: the page mints a new token and calls again."""
    async with (
        CuttableProxy(target_port=livekit_server.port) as proxy,
        voice_stack(livekit_server, tmp_path, public_rtc_url=proxy.url) as stack,
    ):
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, stack.url)
        await client.start_call()
        await client.wait_state("in_call")
        await client.wait_caption("agent", GREETING)
        await client.wait_agent_state("listening")

        await proxy.cut()  # every connection reset, new ones refused
        await client.wait_status(r"Resuming the call")
        await client.wait_status(r"Reconnecting \(1/5\)", timeout_ms=30_000)
        await proxy.restore()
        await client.wait_state("in_call", timeout_ms=30_000)
        assert "Reconnected" in await client.page.text_content("#call-status")  # type: ignore[operator]

        # A fresh token, so a new room: the agent greets again, the old connection is gone.
        first, second = client.tokens
        assert second["room"] != first["room"]
        await client.page.wait_for_function(
            """(text) => [...document.querySelectorAll('#captions li[data-speaker="agent"]')]
                 .filter((li) => li.textContent.includes(text)).length === 2""",
            arg=GREETING,
        )
        await client.wait_agent_state("listening")
        assert await participants_named(livekit_server, second["identity"]) == [second["room"]]
        assert await client.microphone_tracks() == ["ended", "live"]
        assert await client.audio_elements() == 1  # the new agent's voice only

        await client.end_call()
        await client.wait_state("idle")
        await wait_until_gone(livekit_server, second["identity"])
        assert await client.audio_elements() == 0
        # The first connection could not say goodbye (the network was gone); LiveKit drops it
        # when its own participant timeout runs out, some 30 s after the cut.
        await wait_until_gone(livekit_server, first["identity"], timeout_s=60)
        assert await client.csp_violations() == []


async def test_agent_hanging_up_ends_the_call_on_the_page(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """The agent says goodbye at the call's time limit and leaves: the page says so, goes idle."""
    async with voice_stack(livekit_server, tmp_path, max_call_s=3.0) as stack:
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, stack.url)
        await client.page.keyboard.press("Tab")  # skip link
        await client.page.keyboard.press("Tab")
        assert await client.focused() == "start-call"
        await client.page.keyboard.press("Enter")  # keyboard only
        await client.wait_state("in_call")
        assert await client.focused() == "end-call"  # focus follows the button that matters
        await client.wait_caption("agent", "Thanks for calling. Goodbye!")
        assert await client.error_text() == "The agent ended the call (time limit reached)."
        await client.wait_state("idle")
        assert await client.focused() == "start-call"
        [token] = client.tokens
        await wait_until_gone(livekit_server, token["identity"])
        assert await client.audio_elements() == 0
        assert set(await client.microphone_tracks()) == {"ended"}
