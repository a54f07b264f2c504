"""Client actions in real Chromium: only valid, allowed, first-seen actions from an agent run.

A test participant joins the call's room as an agent (its token says kind "agent", as only a
server-side key can) and sends the page hostile and valid actions; it reads the page's answers on
`client_events`. A plain participant sends one too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc

from tests.browser.client_page import ClientPage, compact
from tests.browser.conftest import Launch
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PROFILE = """
[client_actions]
allowed = ["open_url", "show_checklist", "request_confirm"]
url_hosts = ["status.example.com"]
"""
LINK = "https://status.example.com/incidents/42"


def action(action_id: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "client_action", "v": 1, "id": action_id, "action": name, "payload": payload}


class RoomSender:
    """A participant in the call's room that sends client actions and collects the answers."""

    def __init__(self, livekit: LiveKitEndpoint, room: str, *, identity: str, kind: str) -> None:
        self.room = rtc.Room()
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._url = livekit.ws_url
        self._token = (
            api.AccessToken(livekit.api_key, livekit.api_secret)
            .with_identity(identity)
            .with_kind(kind)  # type: ignore[arg-type]
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish_data=True))
            .to_jwt()
        )
        self.room.on("data_received", self._on_data)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == "client_events":
            self.answers.put_nowait(json.loads(packet.data))

    async def __aenter__(self) -> RoomSender:
        await self.room.connect(self._url, self._token)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.room.disconnect()

    async def send(self, message: dict[str, Any] | bytes, to: str) -> None:
        data = message if isinstance(message, bytes) else compact(message)
        await self.room.local_participant.publish_data(
            data, reliable=True, topic="client_actions", destination_identities=[to]
        )

    async def answers_until(self, answer_type: str, action_id: str) -> list[dict[str, Any]]:
        """Every answer received up to and including `answer_type` for `action_id`."""
        got = []
        async with asyncio.timeout(20):
            while True:
                got.append(await self.answers.get())
                if (got[-1]["type"], got[-1].get("id")) == (answer_type, action_id):
                    return got


async def test_hostile_actions_are_refused_audited_and_answered(
    livekit_server: LiveKitEndpoint, tmp_path: Path, launch_chromium: Launch, silence_wav: Path
) -> None:
    """Unknown, off-policy, oversize, repeated or non-agent actions never run; valid ones once."""
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE)
    async with voice_stack(livekit_server, tmp_path, profile=profile) as stack:
        browser = await launch_chromium(microphone=silence_wav)
        client = await ClientPage.open(browser, stack.url, width=390)  # phone width
        await client.start_call()
        await client.wait_state("in_call")
        await client.wait_agent_state("listening")
        [token] = client.tokens
        page_id = token["identity"]
        assert token["client_policy"]["url_hosts"] == ["status.example.com"]

        async with (
            RoomSender(
                livekit_server, token["room"], identity="rogue-agent", kind="agent"
            ) as agent,
            RoomSender(
                livekit_server, token["room"], identity="bystander", kind="standard"
            ) as bystander,
        ):
            checklist: dict[str, Any] = {
                "title": "<img src=x onerror=alert(1)>Router steps",
                "items": ["Unplug the <b>router</b>", "Wait ten seconds"],
            }
            await bystander.send(action("by_plain", "show_checklist", checklist), to=page_id)
            await agent.send(action("bad_unknown", "run_script", {"code": "alert(1)"}), to=page_id)
            await agent.send(
                action("bad_host", "open_url", {"url": "https://evil.example.net/login"}),
                to=page_id,
            )
            oversize = action("bad_big", "open_url", {"url": LINK + "?" + "a" * 9000})
            await agent.send(compact(oversize), to=page_id)
            await agent.send(
                action("ok_link", "open_url", {"url": LINK, "label": "Incident 42"}), to=page_id
            )
            await agent.send(action("ok_link", "show_checklist", checklist), to=page_id)
            await agent.send(action("ok_list", "show_checklist", checklist), to=page_id)
            confirm = {"prompt": "Cancel order 1234?", "tool": "cancel_order", "timeout_s": 30}
            await agent.send(action("confirm_yes", "request_confirm", confirm), to=page_id)

            prompt = await client.answer_confirmation(accept=True, screenshot="client-confirm.png")
            assert prompt == "Cancel order 1234?"
            answers = await agent.answers_until("user_confirmed", "confirm_yes")

            # Escape declines; an unanswered request declines itself when its time is up.
            await agent.send(action("confirm_esc", "request_confirm", confirm), to=page_id)
            await client.page.locator("#confirm-dialog[open]").wait_for()
            focused = await client.focused()
            await client.page.keyboard.press("Escape")
            answers += await agent.answers_until("user_confirmed", "confirm_esc")
            short = {"prompt": "Delete the draft?", "timeout_s": 1}
            await agent.send(action("confirm_late", "request_confirm", short), to=page_id)
            answers += await agent.answers_until("user_confirmed", "confirm_late")
            assert bystander.answers.empty()

        # Exactly one answer per answerable id, in order; none for the oversize or repeated one.
        assert [(a["type"], a["id"], a["ok"]) for a in answers] == [
            ("action_result", "bad_unknown", False),
            ("action_result", "bad_host", False),
            ("action_result", "ok_link", True),
            ("action_result", "ok_list", True),
            ("user_confirmed", "confirm_yes", True),
            ("user_confirmed", "confirm_esc", False),
            ("user_confirmed", "confirm_late", False),
        ]
        assert all(a["v"] == 1 for a in answers)
        assert answers[0]["error"] == "unknown action"
        assert answers[1]["error"] == "host evil.example.net is not allowed"
        assert focused == "confirm-decline"

        # Only the two valid actions are on the page, their text shown as text.
        cards = await client.page.eval_on_selector_all(
            "#actions > li", "(cards) => cards.map((c) => c.dataset.actionId)"
        )
        assert cards == ["ok_list", "ok_link"]
        link = client.page.locator("#actions a")
        assert await link.get_attribute("href") == LINK
        assert await link.get_attribute("rel") == "noopener noreferrer"
        assert await link.text_content() == "Incident 42"
        assert await client.page.locator("#actions img, #actions b").count() == 0
        assert checklist["title"] in (await client.page.text_content("#actions h3") or "")

        # The plain participant's message is not ordered with the agent's: wait for its row too.
        await client.page.wait_for_function(
            "() => document.querySelectorAll('#audit-rows tr').length >= 13"
        )
        audit = {(row["id"], row["outcome"], row["reason"]) for row in await client.audit()}
        assert audit == {
            ("—", "rejected", "not sent by the agent"),
            ("bad_unknown", "rejected", "unknown action"),
            ("bad_host", "rejected", "host evil.example.net is not allowed"),
            ("—", "rejected", f"message is {len(compact(oversize))} bytes; the limit is 8192"),
            ("ok_link", "executed", ""),
            ("ok_link", "ignored", "repeated id"),
            ("ok_list", "executed", ""),
            ("confirm_yes", "asked", ""),
            ("confirm_yes", "confirmed", ""),
            ("confirm_esc", "asked", ""),
            ("confirm_esc", "declined", ""),
            ("confirm_late", "asked", ""),
            ("confirm_late", "timeout", "no answer in time; counted as declined"),
        }
        # Usable at phone width: nothing wider than the screen, the audit table included.
        await client.page.click("#audit summary")
        assert await client.page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"
        )
        await client.end_call()
        await client.wait_state("idle")
        assert await client.csp_violations() == []
