"""MCP servers as tool sources: a real server in a subprocess, over stdio and streamable HTTP,
through the real tool runtime (ledger file, breakers, confirmation, audit)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.mcp_servers import (
    ORDERS_MCP,
    TOKEN_ENV,
    HttpOrdersServer,
    Journal,
    kill_pid,
    orders_stdio,
)
from voice_agent.cli import main
from voice_agent.exceptions import ConfigError, ToolLoadError
from voice_agent.profile import McpServerConfig
from voice_agent.tooling import REDACTED, BreakerBoard
from voice_agent.tooling.confirm import ConfirmationAnswer
from voice_agent.tooling.mcp import IDEMPOTENCY_META, function_name
from voice_agent.tooling.sources import ToolSources
from voice_agent.tooling.testing import ToolBench

TOKEN = "orders-test-token"
ALLOWED = (
    "orders.lookup_order",
    "orders.refund_order",
    "orders.add_order_note",
    "orders.verify_customer",
)
LOOKUP, REFUND, NOTE, VERIFY, PURGE = (
    "orders__lookup_order",
    "orders__refund_order",
    "orders__add_order_note",
    "orders__verify_customer",
    "orders__purge_orders",
)


def _environ(name: str) -> str | None:
    return f"Bearer {TOKEN}" if name == TOKEN_ENV else None  # the whole header value


@dataclass
class Orders:
    """A started orders server, the sources that reach it, and its journal."""

    sources: ToolSources
    journal: Journal
    http: HttpOrdersServer | None

    def bench(
        self, data_dir: Path, *answers: ConfirmationAnswer | None, **options: Any
    ) -> ToolBench:
        """A runtime over the server's tools with the orders profile's allowlist (its ledger
        in `data_dir`)."""
        options.setdefault("allowed", ALLOWED)
        return ToolBench.create(
            *self.sources.registry.specs(), data_dir=data_dir, answers=answers, **options
        )

    async def kill(self) -> None:
        """Kill the server process (the HTTP one stays down until `revive`)."""
        if self.http is not None:
            await self.http.kill()
        else:
            kill_pid(self.journal.pids()[-1])

    async def revive(self) -> None:
        """Bring an HTTP server back (a stdio one is restarted by the connection itself)."""
        if self.http is not None:
            await self.http.start()


@contextlib.asynccontextmanager
async def _orders(transport: str, directory: Path) -> AsyncIterator[Orders]:
    journal = Journal(directory / "orders.jsonl")
    async with contextlib.AsyncExitStack() as stack:
        http: HttpOrdersServer | None = None
        if transport == "http":
            http = await stack.enter_async_context(HttpOrdersServer(journal, token=TOKEN))
            server = http.config()
        else:
            server = orders_stdio(journal)
        sources = await ToolSources.open(
            tools_path=None, mcp_servers=[server], data_dir=directory, environ=_environ
        )
        stack.push_async_callback(sources.aclose)
        yield Orders(sources=sources, journal=journal, http=http)


@pytest.fixture(scope="module", params=["stdio", "http"])
async def orders(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Orders]:
    """The orders server over each transport, shared by the tests that do not break it (each
    uses its own order numbers)."""
    async with _orders(request.param, tmp_path_factory.mktemp(request.param)) as started:
        yield started


@pytest.fixture(params=["stdio", "http"])
async def own_orders(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Orders]:
    """An orders server of the test's own, over each transport, for tests that kill it."""
    async with _orders(request.param, tmp_path) as started:
        yield started


async def test_allowlisted_read_only_tool_runs_and_is_audited_by_its_mcp_name(
    orders: Orders, tmp_path: Path
) -> None:
    """The model calls orders__lookup_order; the server runs it; the audit says
    orders.lookup_order, and the call's _meta carried the audited idempotency key."""
    async with orders.bench(tmp_path) as bench:
        result = await bench.run(LOOKUP, order_id="ORD-1001")
    assert result.outcome == "ok", result.content
    assert json.loads(result.content)["result"] == {
        "order_id": "ORD-1001",
        "state": "shipped",
        "total": 42.5,
    }
    [audit] = bench.audit
    assert (audit.tool, audit.confirmation) == ("orders.lookup_order", "not_needed")
    [call] = orders.journal.calls("lookup_order", order_id="ORD-1001")
    assert call["meta"][IDEMPOTENCY_META] == audit.idempotency_key
    assert call["meta"]["voice-agent/call_id"] == "call-test"


async def test_destructive_tool_is_not_run_when_the_caller_declines(
    orders: Orders, tmp_path: Path
) -> None:
    """refund_order (destructiveHint) asks first; declined, it never reaches the server."""
    async with orders.bench(tmp_path, "declined") as bench:
        result = await bench.run(REFUND, order_id="ORD-1002", amount=20)
    assert (result.outcome, result.audit.confirmation) == ("declined", "declined")
    [request] = bench.confirmer.requests
    assert request.prompt == "Refund order: order id 'ORD-1002', amount 20?"
    assert request.tool == "orders.refund_order"
    assert orders.journal.calls("refund_order", order_id="ORD-1002") == []


async def test_idempotency_key_reaches_the_server_once_per_logical_call(
    orders: Orders, tmp_path: Path
) -> None:
    """Confirmed, the refund runs; the model asking for the same refund again is answered
    from the ledger, so the server sees the key once."""
    async with orders.bench(tmp_path, "confirmed") as bench:
        first = await bench.run(REFUND, order_id="ORD-1003", amount=20)
        again = await bench.run(REFUND, order_id="ORD-1003", amount=20)
    assert [first.outcome, again.outcome] == ["ok", "duplicate"]
    assert json.loads(again.content)["result"] == json.loads(first.content)["result"]
    [call] = orders.journal.calls("refund_order", order_id="ORD-1003")
    assert call["meta"][IDEMPOTENCY_META] == first.audit.idempotency_key
    assert len(orders.journal.events("refunded", order_id="ORD-1003")) == 1


async def test_unlisted_tool_is_never_offered_and_refused_when_named(
    orders: Orders, tmp_path: Path
) -> None:
    """purge_orders is registered but not allowed: not in the model's tools; named anyway, it
    is refused and never reaches the server."""
    async with orders.bench(tmp_path) as bench:
        offered = {t["function"]["name"] for t in bench.runtime.tool_schemas()}
        result = await bench.run(PURGE)
    assert offered == {LOOKUP, REFUND, NOTE, VERIFY}
    assert result.outcome == "refused"
    assert (bench.audit[0].tool, bench.audit[0].error) == (
        "orders.purge_orders",
        "not allowed for this agent",
    )
    assert orders.journal.calls("purge_orders") == []


async def test_arguments_are_checked_against_the_input_schema_before_the_call(
    orders: Orders, tmp_path: Path
) -> None:
    """A malformed order id and a missing amount are `invalid`; nothing reaches the server."""
    async with orders.bench(tmp_path) as bench:
        result = await bench.run(REFUND, order_id="1004")
    assert result.outcome == "invalid"
    message = json.loads(result.content)["message"]
    assert "'order_id': must match the pattern ^ORD-\\d{4}$" in message
    assert "'amount': Field required" in message
    assert orders.journal.calls("refund_order", order_id="1004") == []


async def test_secret_arguments_reach_the_server_but_not_the_audit(
    orders: Orders, tmp_path: Path
) -> None:
    """A property the schema marks as a password (pydantic's SecretStr) is `[redacted]` in the
    audit and logs, like a @tool's secret_args; the server still gets the value."""
    with capture_logs() as logs:
        async with orders.bench(tmp_path) as bench:
            result = await bench.run(VERIFY, order_id="ORD-1007", pin="4321")
    assert result.outcome == "ok"
    assert result.result["verified"] is True
    assert result.audit.arguments == {"order_id": "ORD-1007", "pin": REDACTED}
    assert "4321" not in repr(logs)
    [call] = orders.journal.calls("verify_customer", order_id="ORD-1007")
    assert call["pin"] == "4321"


async def test_server_error_answer_is_a_tool_failure_the_model_hears(
    orders: Orders, tmp_path: Path
) -> None:
    """A tool that answers isError: the model is given the server's words, the call goes on."""
    async with orders.bench(tmp_path) as bench:
        failed = await bench.run(NOTE, order_id="ORD-1005", note="fail")
        ok = await bench.run(NOTE, order_id="ORD-1005", note="late delivery")
    assert failed.outcome == "error"
    assert json.loads(failed.content)["message"] == "Error executing tool add_order_note"
    assert ok.outcome == "ok"


async def test_time_limit_stops_a_hanging_call_and_the_session_stays_usable(
    orders: Orders, tmp_path: Path
) -> None:
    """A lookup that never answers times out; the same server process answers the next one."""
    pids = orders.journal.pids()
    async with orders.bench(tmp_path, default_timeout_s=0.5) as bench:
        hung = await bench.run(LOOKUP, order_id="ORD-0000")
        after = await bench.run(LOOKUP, order_id="ORD-1006")
    assert (hung.outcome, after.outcome) == ("timeout", "ok")
    assert orders.journal.pids() == pids


async def test_calls_of_several_calls_share_one_server_concurrently(
    orders: Orders, tmp_path: Path
) -> None:
    """Two calls' runtimes send lookups at the same time over the one session: all answered,
    each with its own call id in _meta, by one server process."""
    pids = orders.journal.pids()
    async with (
        orders.bench(tmp_path / "a", call_id="call-a") as a,
        orders.bench(tmp_path / "b", call_id="call-b") as b,
    ):
        results = await asyncio.gather(
            *(
                bench.run(LOOKUP, order_id=f"ORD-20{i}{n}")
                for i, bench in enumerate((a, b))
                for n in range(3)
            )
        )
    assert [r.outcome for r in results] == ["ok"] * 6
    seen = {
        (c["order_id"], c["meta"]["voice-agent/call_id"])
        for c in orders.journal.calls("lookup_order")
        if c["order_id"].startswith("ORD-20")
    }
    assert seen == {(f"ORD-20{i}{n}", f"call-{'ab'[i]}") for i in range(2) for n in range(3)}
    assert orders.journal.pids() == pids


async def test_server_killed_mid_call_fails_that_call_and_the_next_one_works(
    own_orders: Orders, tmp_path: Path
) -> None:
    """The server dies while a lookup waits: the caller is told it failed, nothing crashes;
    once the server is back (restarted by us over stdio), the next lookup runs."""
    orders = own_orders
    async with orders.bench(tmp_path, default_timeout_s=20.0) as bench:
        pending = asyncio.ensure_future(bench.run(LOOKUP, order_id="ORD-0000"))
        await orders.journal.wait_for(lambda j: len(j.calls("lookup_order")) == 1)
        await orders.kill()
        failed = await asyncio.wait_for(pending, 15)
        await orders.revive()
        after = await bench.run(LOOKUP, order_id="ORD-1234")
    assert failed.outcome == "error"
    assert "did not work" in json.loads(failed.content)["tell_user"]
    assert "went away during the call" in (failed.audit.error or "")
    assert after.outcome == "ok", after.content
    assert len(set(orders.journal.pids())) == 2  # a second server process answered


async def test_a_stdio_server_that_dies_between_calls_is_restarted_before_the_next(
    tmp_path: Path,
) -> None:
    """Its exit is noticed at once (stdout closes): a new process is up and answers the next
    call, which never sees the dead one."""
    async with _orders("stdio", tmp_path) as orders:
        kill_pid(orders.journal.pids()[0])
        await orders.journal.wait_for(lambda j: len(j.pids()) == 2)
        async with orders.bench(tmp_path) as bench:
            result = await bench.run(LOOKUP, order_id="ORD-1234")
        connection = orders.sources.mcp[0].connection
    assert result.outcome == "ok", result.content
    assert connection.restarts == 1


async def test_a_retried_logical_call_runs_once_at_the_server(
    own_orders: Orders, tmp_path: Path
) -> None:
    """The server makes a refund and dies before answering; the model retries the same refund
    (same idempotency key in _meta) and the restarted server returns that refund, not a new one."""
    orders = own_orders
    async with orders.bench(tmp_path, "confirmed", "confirmed", default_timeout_s=20.0) as bench:
        pending = asyncio.ensure_future(bench.run(REFUND, order_id="ORD-0000", amount=5))
        await orders.journal.wait_for(lambda j: len(j.events("refunded")) == 1)
        await orders.kill()
        lost = await asyncio.wait_for(pending, 15)
        await orders.revive()
        retried = await bench.run(REFUND, order_id="ORD-0000", amount=5)
    assert (lost.outcome, retried.outcome) == ("error", "ok")
    [refund] = orders.journal.events("refunded")
    assert json.loads(retried.content)["result"] == {
        "refund_id": refund["refund_id"],
        "amount": 5.0,
        "repeat": True,
    }
    keys = {c["meta"][IDEMPOTENCY_META] for c in orders.journal.calls("refund_order")}
    assert keys == {lost.audit.idempotency_key} == {retried.audit.idempotency_key}


async def test_an_http_server_that_stays_down_opens_the_tools_breaker(tmp_path: Path) -> None:
    """The server is gone: the lookup fails, and with a one-failure breaker the next request
    is refused at once, without trying the server."""
    journal = Journal(tmp_path / "orders.jsonl")
    async with HttpOrdersServer(journal, token=TOKEN) as http:
        sources = await ToolSources.open(
            tools_path=None, mcp_servers=[http.config()], data_dir=tmp_path, environ=_environ
        )
        orders = Orders(sources=sources, journal=journal, http=http)
        board = BreakerBoard(failures=1, cooldown_s=60.0)
        try:
            async with orders.bench(tmp_path, default_timeout_s=2.0, breakers=board) as bench:
                await http.kill()
                first = await bench.run(LOOKUP, order_id="ORD-1234")
                second = await bench.run(LOOKUP, order_id="ORD-1234")
        finally:
            await sources.aclose()
    assert first.outcome in ("error", "timeout")
    assert second.outcome == "breaker_open"
    assert "unavailable" in json.loads(second.content)["tell_user"]


async def test_destructive_follows_the_annotations_and_the_profile(tmp_path: Path) -> None:
    """Read-only and destructiveHint=false tools run unconfirmed, destructiveHint and
    unannotated ones are confirmed, and the profile's `destructive` list adds to them."""

    async def load(**config: Any) -> dict[str, bool]:
        server = orders_stdio(Journal(tmp_path / "j.jsonl"), **config)
        async with await ToolSources.open(
            tools_path=None, mcp_servers=[server], data_dir=tmp_path
        ) as sources:
            return {s.name: s.destructive for s in sources.registry.specs()}

    assert await load() == {
        "orders.add_order_note": False,
        "orders.lookup_order": False,
        "orders.purge_orders": True,  # no annotations: the MCP default is destructive
        "orders.refund_order": True,
        "orders.verify_customer": False,
    }
    assert (await load(destructive=("add_order_note",)))["orders.add_order_note"] is True


async def test_a_server_that_cannot_start_is_a_load_error_naming_it(tmp_path: Path) -> None:
    """A command that exits at once: `ToolLoadError` naming the server and its last stderr."""
    broken = McpServerConfig(
        name="crm", command=("python", "-c", "import sys; sys.exit('crm database unreachable')")
    )
    with pytest.raises(ToolLoadError) as raised:
        await ToolSources.open(tools_path=None, mcp_servers=[broken], data_dir=tmp_path)
    assert "MCP server 'crm'" in str(raised.value)
    assert "crm database unreachable" in str(raised.value)


async def test_missing_header_variable_is_a_config_error_naming_the_field(
    tmp_path: Path,
) -> None:
    """headers_env naming an unset variable stops the start before anything is contacted."""
    server = McpServerConfig(
        name="orders", url="https://orders.example/mcp", headers_env={"Authorization": "NOPE"}
    )
    with pytest.raises(ConfigError, match=r"mcp_servers\.0\.headers_env\.Authorization"):
        await ToolSources.open(
            tools_path=None, mcp_servers=[server], data_dir=tmp_path, environ=lambda _: None
        )


async def test_wrong_bearer_token_is_a_load_error(tmp_path: Path) -> None:
    """The header value really is sent: the HTTP server refuses another token at start."""
    journal = Journal(tmp_path / "orders.jsonl")
    async with HttpOrdersServer(journal, token=TOKEN) as http:
        with pytest.raises(ToolLoadError, match="MCP server 'orders'") as raised:
            await ToolSources.open(
                tools_path=None,
                mcp_servers=[http.config()],
                data_dir=tmp_path,
                environ=lambda _: "Bearer not-the-token",
            )
    assert journal.events("unauthorized")
    assert "not-the-token" not in str(raised.value)


async def test_header_values_never_reach_the_logs(tmp_path: Path) -> None:
    """Starting, calling and stopping an HTTP server with a bearer token logs no token."""
    journal = Journal(tmp_path / "orders.jsonl")
    with capture_logs() as logs:
        async with (
            HttpOrdersServer(journal, token=TOKEN) as http,
            await ToolSources.open(
                tools_path=None, mcp_servers=[http.config()], data_dir=tmp_path, environ=_environ
            ) as sources,
        ):
            orders = Orders(sources=sources, journal=journal, http=http)
            async with orders.bench(tmp_path) as bench:
                result = await bench.run(LOOKUP, order_id="ORD-1234")
            await http.kill()  # and a failure, whose error is logged too
            async with orders.bench(tmp_path / "again", default_timeout_s=1.0) as bench:
                await bench.run(LOOKUP, order_id="ORD-4321")
    assert result.outcome == "ok"
    assert any(e["event"] == "mcp.started" for e in logs)
    assert TOKEN not in repr(logs)


def test_function_names_fit_the_model_api_and_stay_distinct() -> None:
    """Dots and other characters become '_', long names are cut with a hash, all <= 64."""
    assert function_name("orders", "lookup_order") == "orders__lookup_order"
    assert function_name("crm", "contacts.find v2") == "crm__contacts_find_v2"
    long_a, long_b = (function_name("orders", "x" * 100 + s) for s in ("a", "b"))
    assert len(long_a) == len(long_b) == 64
    assert long_a != long_b


async def test_a_python_tool_that_looks_like_an_mcp_tool_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """A tool the model would see under the same name as an MCP tool stops the start."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "clash.py").write_text(
        textwrap.dedent(
            '''
            from voice_agent.tooling import ToolContext, tool


            @tool
            async def orders__lookup_order(ctx: ToolContext) -> str:
                """Pretend to be the MCP tool."""
                return "no"
            '''
        )
    )
    server = orders_stdio(Journal(tmp_path / "j.jsonl"))
    with pytest.raises(ToolLoadError, match="orders__lookup_order"):
        await ToolSources.open(tools_path=tools, mcp_servers=[server], data_dir=tmp_path)


def test_cli_tools_lists_mcp_tools_with_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voice-agent tools --json` starts the profile's MCP server (its script named relative to
    the profile file) and lists its tools by their `<server>.<tool>` name, with the model's
    name, the source and the allowlist."""
    journal = Journal(tmp_path / "j.jsonl")
    script = os.path.relpath(ORDERS_MCP, tmp_path)
    command = json.dumps(["python", script, "--journal", str(journal.path)])
    profile = tmp_path / "agent.toml"
    profile.write_text(
        'instructions = "Help."\ngreeting = "Hi."\n'
        '[tools]\nallowed = ["orders.lookup_order"]\n'
        f'[[mcp_servers]]\nname = "orders"\ncommand = {command}\n'
    )
    (tmp_path / "tools").mkdir()
    monkeypatch.setenv("VOICE_AGENT_PROFILE", str(profile))
    monkeypatch.setenv("VOICE_AGENT_TOOLS_PATH", str(tmp_path / "tools"))
    monkeypatch.setenv("VOICE_AGENT_DATA_DIR", str(tmp_path / "data"))
    assert main(["tools", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert set(listed) == {
        "orders.add_order_note",
        "orders.lookup_order",
        "orders.purge_orders",
        "orders.refund_order",
        "orders.verify_customer",
    }
    lookup = listed["orders.lookup_order"]
    assert lookup["function_name"] == "orders__lookup_order"
    assert lookup["source"]["kind"] == "mcp"
    assert lookup["source"]["transport"] == "stdio"
    assert (lookup["allowed"], listed["orders.purge_orders"]["allowed"]) == (True, False)
    assert listed["orders.refund_order"]["destructive"] is True
    assert main(["tools"]) == 0
    table = capsys.readouterr().out
    assert "orders.refund_order" in table
    assert "mcp orders (stdio)" in table
