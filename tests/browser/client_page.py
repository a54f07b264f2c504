"""The web client as tests drive it: a Playwright page plus what the page showed and sent."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from livekit import api
from playwright.async_api import Browser, ConsoleMessage, Page, Response

from tests.chromium import keep_screenshot
from voice_agent.devstack.livekit_server import LiveKitEndpoint

WAIT_MS = 20_000

# Runs before the page's own scripts (injected by the driver, so the page's CSP does not apply):
# records every agent state the indicator showed, every microphone track the page opened, and
# any CSP violation.
_RECORDER = """
window.__test = { agentStates: [], tracks: [], cspViolations: [] };
document.addEventListener("securitypolicyviolation", (e) => {
  window.__test.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
if (navigator.mediaDevices) {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    window.__test.tracks.push(...stream.getTracks());
    return stream;
  };
}
document.addEventListener("DOMContentLoaded", () => {
  const node = document.getElementById("agent-state");
  new MutationObserver(() => {
    const states = window.__test.agentStates;
    if (states[states.length - 1] !== node.dataset.state) states.push(node.dataset.state);
  }).observe(node, { attributes: true, attributeFilter: ["data-state"] });
});
"""


@dataclass
class ClientPage:
    """One browser page with the voice client open."""

    page: Page
    tokens: list[dict[str, Any]] = field(default_factory=list)  # 200 answers of the token API
    token_statuses: list[int] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Browser, url: str, *, width: int = 900) -> ClientPage:
        """A new page on `url`, once the client script has taken over (Start call enabled)."""
        context = await browser.new_context(viewport={"width": width, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        client = cls(page=page)
        await page.add_init_script(_RECORDER)
        page.on("response", client._on_response)
        page.on("console", client._on_console)
        await page.goto(url)
        await page.wait_for_selector("#start-call:not([disabled])")
        return client

    async def _on_response(self, response: Response) -> None:
        if response.url.endswith("/api/voice-token"):
            self.token_statuses.append(response.status)
            if response.ok:
                self.tokens.append(await response.json())

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    # Actions

    async def start_call(self) -> None:
        await self.page.click("#start-call")

    async def end_call(self) -> None:
        await self.page.click("#end-call")

    async def answer_confirmation(self, *, accept: bool, screenshot: str | None = None) -> str:
        """Wait for the confirmation dialog, optionally screenshot it, click; the prompt shown."""
        dialog = self.page.locator("#confirm-dialog[open]")
        await dialog.wait_for(state="visible")
        prompt = await self.page.text_content("#confirm-prompt") or ""
        if screenshot:
            await self.screenshot(screenshot)
        await self.page.click("#confirm-accept" if accept else "#confirm-decline")
        await self.page.locator("#confirm-dialog").wait_for(state="hidden")
        return prompt

    async def screenshot(self, name: str) -> bytes:
        """A full-page PNG; saved as docs/screenshots/`name` when missing or UPDATE_SCREENSHOTS=1.

        (Not on every run: the timer and times differ each time, and the tree should stay clean.)
        """
        png = await self.page.screenshot(full_page=True, animations="disabled")
        keep_screenshot(png, name)
        return png

    # Waiting

    async def wait_state(self, state: str, timeout_ms: int = WAIT_MS) -> None:
        """Until the controller is in `state` (idle, connecting, in_call, reconnecting, ending)."""
        await self.page.wait_for_selector(f'body[data-call-state="{state}"]', timeout=timeout_ms)

    async def wait_status(self, pattern: str, timeout_ms: int = WAIT_MS) -> str:
        """Until the status line matches the regex `pattern`; its text."""
        await self.page.wait_for_function(
            "(p) => new RegExp(p).test(document.getElementById('call-status').textContent)",
            arg=pattern,
            timeout=timeout_ms,
        )
        return await self.page.text_content("#call-status") or ""

    async def wait_agent_state(self, state: str, timeout_ms: int = WAIT_MS) -> None:
        await self.page.wait_for_selector(f'#agent-state[data-state="{state}"]', timeout=timeout_ms)

    async def wait_caption(self, speaker: str, text: str, timeout_ms: int = WAIT_MS) -> None:
        """Until a final caption of `speaker` ("user" or "agent") reads `text`."""
        await self.page.wait_for_function(
            """([speaker, text]) => [...document.querySelectorAll('#captions li')].some(
                 (li) => li.dataset.speaker === speaker && !li.classList.contains('interim')
                   && li.querySelector('.caption-text').textContent === text)""",
            arg=[speaker, text],
            timeout=timeout_ms,
        )

    async def error_text(self) -> str:
        await self.page.wait_for_selector("#call-error:not([hidden])")
        return (await self.page.text_content("#call-error-text") or "").strip()

    # What the page holds

    async def captions(self) -> list[tuple[str, str, bool]]:
        """(speaker, text, final) of every caption line."""
        rows = await self.page.eval_on_selector_all(
            "#captions li",
            """(items) => items.map((li) => [
                 li.dataset.speaker,
                 li.querySelector('.caption-text').textContent,
                 !li.classList.contains('interim'),
               ])""",
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def agent_states(self) -> list[str]:
        return list(await self.page.evaluate("window.__test.agentStates"))

    async def microphone_tracks(self) -> list[str]:
        """readyState of every microphone track the page opened ("live" or "ended")."""
        return list(await self.page.evaluate("window.__test.tracks.map((t) => t.readyState)"))

    async def focused(self) -> str:
        """The id of the element with keyboard focus."""
        return str(await self.page.evaluate("document.activeElement.id"))

    async def csp_violations(self) -> list[str]:
        return list(await self.page.evaluate("window.__test.cspViolations"))

    async def audio_elements(self) -> int:
        return int(await self.page.evaluate("document.querySelectorAll('audio').length"))

    async def audit(self) -> list[dict[str, str]]:
        """The audit panel's rows."""
        rows = await self.page.eval_on_selector_all(
            "#audit-rows tr",
            "(rows) => rows.map((r) => [...r.children].map((td) => td.textContent))",
        )
        keys = ("time", "id", "action", "outcome", "reason")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def close(self) -> None:
        await self.page.context.close()


async def participants_named(livekit: LiveKitEndpoint, identity: str) -> list[str]:
    """The rooms in which a participant called `identity` is connected right now."""
    lkapi = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
    try:
        rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
        found = []
        for room in rooms:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room.name))
            if any(p.identity == identity for p in listed.participants):
                found.append(room.name)
        return found
    finally:
        await lkapi.aclose()


async def wait_until_gone(livekit: LiveKitEndpoint, identity: str, timeout_s: float = 15) -> None:
    """Until LiveKit lists no participant called `identity` in any room."""
    async with asyncio.timeout(timeout_s):
        while await participants_named(livekit, identity):  # noqa: ASYNC110 - polled API
            await asyncio.sleep(0.2)


def compact(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def matches(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None
