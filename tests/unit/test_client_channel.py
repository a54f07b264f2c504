"""Client actions and app events: policy, schemas, the 8 KiB limit, ids, and the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import make_settings
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.client_messages import (
    MessageRejectedError,
    build_client_action,
    parse_client_event,
)
from voice_agent.call_record import CallJournal
from voice_agent.exceptions import ConfigError
from voice_agent.logging import get_logger
from voice_agent.profile import AgentProfile, ClientActionPolicy, load_profile
from voice_agent.protocol import MAX_MESSAGE_BYTES

POLICY = ClientActionPolicy(
    allowed=("open_url", "show_checklist", "request_confirm"),
    url_hosts=("status.example.com", "*.help.example.com"),
)


class Channel:
    """A channel whose published messages are kept in a list."""

    def __init__(self, tmp: Path, policy: ClientActionPolicy = POLICY) -> None:
        self.sent: list[dict[str, Any]] = []
        self.journal = CallJournal(directory=tmp, call_id="c1", room="call-c1", user_id="u1")

        self.published = asyncio.Event()

        async def publish(text: str) -> None:
            self.sent.append(json.loads(text))
            self.published.set()

        self.channel = ClientChannel(
            policy=policy, journal=self.journal, log=get_logger("test"), publish=publish
        )

    def outcomes(self) -> list[tuple[str, str]]:
        return [(a.type, a.outcome) for a in self.journal.record.client_action_audit]


def event(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


async def test_allowed_action_is_sent_with_an_id_and_audited(tmp_path: Path) -> None:
    """A checklist within policy goes out as a v1 client_action and is audited as sent."""
    ch = Channel(tmp_path)
    action_id = await ch.channel.send("show_checklist", {"title": "VPN", "items": ["Reboot"]})
    assert ch.sent == [
        {
            "type": "client_action",
            "v": 1,
            "id": action_id,
            "action": "show_checklist",
            "payload": {"title": "VPN", "items": ["Reboot"]},
        }
    ]
    assert ch.outcomes() == [("client_action", "sent")]


@pytest.mark.parametrize(
    ("action", "payload", "reason"),
    [
        ("open_url", {"url": "https://evil.example.net/x"}, "not allowed"),
        ("open_url", {"url": "http://status.example.com/x"}, "https"),
        ("open_url", {"url": "https://help.example.com/x"}, "not allowed"),  # apex not in *.
        ("show_checklist", {"title": "t", "items": []}, "items"),
        ("show_checklist", {"title": "t", "items": ["a"], "extra": 1}, "extra"),
        ("launch_rocket", {}, "not allowed"),
    ],
)
async def test_policy_or_schema_violation_is_refused_and_audited(
    tmp_path: Path, action: str, payload: dict[str, Any], reason: str
) -> None:
    """Disallowed actions, hosts and bad payloads are never sent; the refusal is audited."""
    ch = Channel(tmp_path)
    with pytest.raises(MessageRejectedError, match=reason):
        await ch.channel.send(action, payload)
    assert ch.sent == []
    assert ch.outcomes() == [("client_action", "refused")]


async def test_subdomain_wildcard_host_is_allowed(tmp_path: Path) -> None:
    """`*.help.example.com` admits a subdomain."""
    ch = Channel(tmp_path)
    await ch.channel.send("open_url", {"url": "https://kb.help.example.com/vpn"})
    assert ch.sent[0]["payload"]["url"] == "https://kb.help.example.com/vpn"


async def test_confirmation_resolves_from_the_matching_user_confirmed(tmp_path: Path) -> None:
    """request_confirm waits for user_confirmed with its id; a wrong id is dropped."""
    ch = Channel(tmp_path)
    task = asyncio.create_task(
        ch.channel.request_confirm(prompt="Create it?", tool="create_ticket", timeout_s=5)
    )
    await asyncio.wait_for(ch.published.wait(), 5)
    action_id = ch.sent[0]["id"]
    ch.channel.receive(event(type="user_confirmed", id="act_other", ok=True))
    assert not task.done()
    ch.channel.receive(event(type="user_confirmed", id=action_id, ok=True))
    assert await task == "confirmed"
    assert ch.outcomes() == [
        ("client_action", "sent"),
        ("user_confirmed", "dropped"),
        ("user_confirmed", "accepted"),
    ]


async def test_declined_and_unanswered_confirmations(tmp_path: Path) -> None:
    """ok=false is declined; no answer within the timeout is "timeout"."""
    ch = Channel(tmp_path)
    task = asyncio.create_task(ch.channel.request_confirm(prompt="Go?", tool="t", timeout_s=5))
    await asyncio.wait_for(ch.published.wait(), 5)
    ch.channel.receive(event(type="user_confirmed", id=ch.sent[0]["id"], ok=False))
    assert await task == "declined"
    assert await ch.channel.request_confirm(prompt="Go?", tool="t", timeout_s=0.05) == "timeout"


async def test_late_confirmation_after_timeout_is_dropped(tmp_path: Path) -> None:
    """An answer to a request that already timed out changes nothing."""
    ch = Channel(tmp_path)
    assert await ch.channel.request_confirm(prompt="Go?", tool="t", timeout_s=0.01) == "timeout"
    ch.channel.receive(event(type="user_confirmed", id=ch.sent[0]["id"], ok=True))
    assert ch.outcomes()[-1] == ("user_confirmed", "dropped")


async def test_action_result_is_accepted_once_per_known_id(tmp_path: Path) -> None:
    """A result for a sent action is audited once; repeats and unknown ids are dropped."""
    ch = Channel(tmp_path)
    action_id = await ch.channel.send("show_checklist", {"title": "t", "items": ["a"]})
    ch.channel.receive(event(type="action_result", id=action_id, ok=False, error="blocked"))
    ch.channel.receive(event(type="action_result", id=action_id, ok=True))
    ch.channel.receive(event(type="action_result", id="act_unknown", ok=True))
    audit = ch.journal.record.client_action_audit
    assert [(a.outcome, a.detail) for a in audit[1:]] == [
        ("accepted", "blocked"),
        ("dropped", "action_result for no open action"),
        ("dropped", "action_result for no open action"),
    ]


async def test_context_message_updates_the_app_context(tmp_path: Path) -> None:
    """The app's context data is kept for tools to read."""
    ch = Channel(tmp_path)
    ch.channel.receive(event(type="context", data={"page": "/billing", "plan": "pro"}))
    assert ch.channel.app_context == {"page": "/billing", "plan": "pro"}


async def test_reconnect_of_is_recorded_as_the_callers_claim(tmp_path: Path) -> None:
    """A context naming the call the page lost is kept as a claim event; a malformed one is not."""
    ch = Channel(tmp_path)
    ch.channel.receive(event(type="context", data={"reconnect_of": "call-3f9a0c"}))
    ch.channel.receive(event(type="context", data={"reconnect_of": "<img src=x>"}))
    claims = [e.data for e in ch.journal.record.events if e.event == "reconnect_claimed"]
    assert claims == [{"claimed_room": "call-3f9a0c"}]
    assert not [e for e in ch.journal.record.events if e.event == "reconnect_of"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"type": "user_confirmed", "v": 2, "id": "a", "ok": True}).encode(),
        json.dumps({"type": "user_confirmed", "v": 1, "id": "a", "ok": "yes"}).encode(),
        json.dumps({"type": "user_confirmed", "v": 1, "id": "a", "ok": True, "x": 1}).encode(),
        json.dumps({"type": "shell", "v": 1, "cmd": "rm"}).encode(),
        json.dumps({"type": "user_confirmed", "v": 1, "id": "<script>", "ok": True}).encode(),
        json.dumps({"type": "context", "v": 1, "data": {"x": "a" * MAX_MESSAGE_BYTES}}).encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_app_messages_are_rejected(raw: bytes) -> None:
    """Bad JSON, wrong version or type, extra fields, odd ids and oversize bodies are refused."""
    with pytest.raises(MessageRejectedError):
        parse_client_event(raw)


async def test_flood_of_bad_messages_is_counted_not_journaled(tmp_path: Path) -> None:
    """Thousands of bad messages leave a bounded audit trail and a count."""
    ch = Channel(tmp_path)
    for _ in range(2000):
        ch.channel.receive(b"{")
    assert ch.channel.dropped == 2000
    assert len(ch.journal.record.client_action_audit) <= 50


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=600),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=40),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["type", "v", "id", "ok", "data", "error", "x"]),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_parser_never_raises_anything_but_a_rejection(raw: bytes) -> None:
    """Fuzzed input either parses to a known event or is rejected; nothing else escapes."""
    with contextlib.suppress(MessageRejectedError):
        parse_client_event(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.dictionaries(
        st.sampled_from(["type", "v", "id", "ok", "data", "error"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        max_size=5,
    ).map(lambda value: json.dumps(value).encode())
)
def test_channel_survives_any_message(raw: bytes) -> None:
    """The channel never raises on what the app sends."""
    journal_dir = Path("/tmp/voice-agent-fuzz")  # noqa: S108 - scratch journal, test only
    ch = Channel(journal_dir)
    ch.channel.receive(raw)


def test_build_client_action_rejects_oversize_message() -> None:
    """A message over 8 KiB is refused even when each field is within its own limit."""
    items = ["x" * 200] * 20
    policy = ClientActionPolicy(allowed=("show_checklist",))
    message = build_client_action("show_checklist", {"title": "t", "items": items}, policy=policy)
    assert len(json.dumps(message)) < MAX_MESSAGE_BYTES  # 20 x 200 fits
    with pytest.raises(MessageRejectedError):
        build_client_action(
            "show_checklist", {"title": "t", "items": ["\u00e9" * 200] * 20}, policy=policy
        )


def test_profile_file_is_validated_with_a_clear_message(tmp_path: Path) -> None:
    """A profile with an unknown key or a bad host names it; a good one loads."""
    settings = make_settings(greeting="Hello there.")
    bad = tmp_path / "bad.toml"
    bad.write_text('[client_actions]\nallowed = ["open_url"]\nurl_hosts = ["https://x"]\n')
    with pytest.raises(ConfigError, match="url_hosts"):
        load_profile(make_settings(profile=bad))
    good = tmp_path / "good.toml"
    good.write_text(
        'name = "support"\n[tools]\nallowed = ["create_ticket"]\nmax_calls_per_turn = 2\n'
    )
    profile = AgentProfile.from_file(good, settings=settings)
    assert profile.tools.allowed == ("create_ticket",)
    assert profile.greeting == "Hello there."
    typo = tmp_path / "typo.toml"
    typo.write_text("[tools]\nalowed = []\n")
    with pytest.raises(ConfigError, match="alowed"):
        AgentProfile.from_file(typo, settings=settings)
