"""The bundled example tools (tools/, and the MCP server in tools/mcp/) against the data shipped
with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings
from voice_agent.profile import AgentProfile
from voice_agent.tooling import ToolRegistry, ToolSpec
from voice_agent.tooling.sources import ToolSources
from voice_agent.tooling.testing import ToolBench, tool_context
from voice_agent.tooling.tickets import TicketStore

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = ROOT / "tools"
PROFILE = ROOT / "deploy" / "profiles" / "support.toml"


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.load(TOOLS_DIR)


def _spec(registry: ToolRegistry, name: str) -> ToolSpec:
    spec = registry.get(name)
    assert spec is not None, name
    return spec


async def _invoke(spec: ToolSpec, tmp_path: Path, key: str = "k", **arguments: Any) -> Any:
    return await spec.invoke(arguments, tool_context(tmp_path, idempotency_key=key), timeout_s=5)


async def test_incident_status_by_number(registry: ToolRegistry, tmp_path: Path) -> None:
    """An incident is found by its id or its number alone."""
    spec = _spec(registry, "get_incident_status")
    found = await _invoke(spec, tmp_path, incident_id="1042")
    assert found["found"] is True
    assert found["incident"]["id"] == "INC-1042"
    assert found["incident"]["status"] == "investigating"
    same = await _invoke(spec, tmp_path, incident_id="inc-1042")
    assert same == found


async def test_unknown_incident_says_so(registry: ToolRegistry, tmp_path: Path) -> None:
    """An id with no incident is a plain "not found", not an error."""
    result = await _invoke(_spec(registry, "get_incident_status"), tmp_path, incident_id="INC-9")
    assert result["found"] is False
    assert "INC-9" in result["message"]


async def test_open_incidents_leave_out_resolved_ones(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """Only unresolved incidents are listed, optionally for one service."""
    spec = _spec(registry, "list_open_incidents")
    everything = await _invoke(spec, tmp_path)
    assert {i["id"] for i in everything["incidents"]} == {"INC-1042", "INC-1043", "INC-1045"}
    vpn = await _invoke(spec, tmp_path, service="VPN")
    assert [i["id"] for i in vpn["incidents"]] == ["INC-1043"]


@pytest.mark.parametrize(
    ("query", "runbook"),
    [
        ("I forgot my password", "password-reset"),
        ("the VPN keeps disconnecting", "vpn-troubleshooting"),
        ("I was charged twice and want a refund", "billing-invoices-refunds"),
        ("new phone, no authenticator codes", "mfa-new-phone"),
        ("emails are not arriving", "email-not-arriving"),
        ("install an application on my laptop", "software-install-request"),
    ],
)
async def test_runbook_search_finds_the_right_runbook(
    registry: ToolRegistry, tmp_path: Path, query: str, runbook: str
) -> None:
    """Common problems find their runbook first, with its steps."""
    result = await _invoke(_spec(registry, "search_runbooks"), tmp_path, query=query)
    top = result["results"][0]
    assert top["runbook"] == runbook
    assert top["steps"]
    assert top["summary"]
    assert top["if_it_does_not_work"]


async def test_runbook_search_without_a_match_says_so(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """A query matching nothing returns no results and advice for the model."""
    result = await _invoke(_spec(registry, "search_runbooks"), tmp_path, query="zebra giraffe")
    assert result["results"] == []
    assert "ticket" in result["message"]


async def test_create_ticket_confirmed_creates_one_ticket(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """Confirmed, the ticket exists once; the same request again is a duplicate, not a 2nd row."""
    spec = _spec(registry, "create_ticket")
    arguments = {"title": "VPN drops", "description": "Drops hourly.", "priority": "high"}
    async with ToolBench.create(spec, data_dir=tmp_path, answers=["confirmed"]) as bench:
        first = await bench.run("create_ticket", **arguments)
        again = await bench.run("create_ticket", **arguments)
    assert first.outcome == "ok"
    assert again.outcome == "duplicate"
    assert first.result["ticket_id"].startswith("TCK-")
    assert again.result["ticket_id"] == first.result["ticket_id"]
    assert bench.confirmer.requests[0].prompt == (
        "Open a high priority support ticket titled 'VPN drops'?"
    )
    (ticket,) = TicketStore.in_data_dir(tmp_path).tickets()
    assert ticket.title == "VPN drops"
    assert ticket.call_id == "call-test"


async def test_create_ticket_declined_creates_nothing(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """Declined, no ticket is written."""
    spec = _spec(registry, "create_ticket")
    async with ToolBench.create(spec, data_dir=tmp_path, answers=["declined"]) as bench:
        result = await bench.run("create_ticket", title="VPN drops", description="Drops hourly.")
    assert result.outcome == "declined"
    assert TicketStore.in_data_dir(tmp_path).count() == 0


async def test_create_ticket_invoked_twice_with_one_key_writes_one_row(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """Even without the runtime's ledger, the store's unique key keeps one ticket per key."""
    spec = _spec(registry, "create_ticket")
    arguments = {"title": "Printer", "description": "Jams on every page."}
    one = await _invoke(spec, tmp_path, key="same", **arguments)
    two = await _invoke(spec, tmp_path, key="same", **arguments)
    other = await _invoke(spec, tmp_path, key="different", **arguments)
    store = TicketStore.in_data_dir(tmp_path)
    assert one["ticket_id"] == two["ticket_id"] != other["ticket_id"]
    assert store.count() == 2
    assert store.get(one["ticket_id"]) is not None


async def test_escalation_records_once_and_says_what_happens_next(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    """An escalation returns its reference and next step; a repeat returns the same one."""
    spec = _spec(registry, "escalate_to_human")
    first = await _invoke(spec, tmp_path, key="e1", reason="Cannot sign in after a reset.")
    again = await _invoke(spec, tmp_path, key="e1", reason="Cannot sign in after a reset.")
    urgent = await _invoke(spec, tmp_path, key="e2", reason="Whole team offline.", urgency="urgent")
    assert first["reference"].startswith("ESC-")
    assert first == again
    assert "2 business hours" in first["next_step"]
    assert urgent["reference"] != first["reference"]
    assert "30 minutes" in urgent["next_step"]


def test_every_example_tool_is_described_for_the_model(registry: ToolRegistry) -> None:
    """Each example has a description, a strict schema and a timeout of its own."""
    for spec in registry.specs():
        assert spec.description
        assert spec.parameters["additionalProperties"] is False
        assert spec.timeout_s is not None
    assert [s.name for s in registry.specs() if s.destructive] == ["create_ticket"]


async def test_example_mcp_server_serves_the_support_profile(tmp_path: Path) -> None:
    """The support profile's accounts server (tools/mcp/accounts_mcp.py) answers a status
    lookup unconfirmed; an unlock asks first (the profile's override) and runs once per
    idempotency key, in the ledger and at the server; delete_account is never offered."""
    settings = make_settings(tools_path=TOOLS_DIR, data_dir=tmp_path)
    profile = AgentProfile.from_file(PROFILE, settings=settings)
    mcp = [s for s in profile.mcp_servers if s.name == "accounts"]
    async with await ToolSources.open(
        tools_path=None, mcp_servers=mcp, data_dir=tmp_path, cwd=profile.directory
    ) as sources:
        allowed = [n for n in profile.tools.allowed if n.startswith("accounts.")]
        specs = sources.registry.specs()
        async with ToolBench.create(
            *specs, data_dir=tmp_path, allowed=allowed, answers=["confirmed"]
        ) as bench:
            offered = {t["function"]["name"] for t in bench.runtime.tool_schemas()}
            status = await bench.run("accounts__get_account_status", username="ada.lovelace")
            unlock = await bench.run("accounts__unlock_account", username="ada.lovelace")
            again = await bench.run("accounts__unlock_account", username="ada.lovelace")
            # Past the ledger (as the post-call worker or another host would call it): the
            # server itself answers a known idempotency key with what it did the first time.
            unlock_spec = sources.registry.get("accounts.unlock_account")
            assert unlock_spec is not None
            assert unlock.audit.idempotency_key is not None
            ctx = tool_context(tmp_path, idempotency_key=unlock.audit.idempotency_key)
            direct = await unlock_spec.invoke({"username": "ada.lovelace"}, ctx, timeout_s=5)
    assert offered == {"accounts__get_account_status", "accounts__unlock_account"}
    assert status.outcome == "ok"
    assert status.result["locked"] is True
    assert (unlock.outcome, unlock.audit.confirmation) == ("ok", "confirmed")
    assert unlock.result["unlocked"] is True
    assert (again.outcome, again.result) == ("duplicate", unlock.result)
    assert direct == unlock.result
