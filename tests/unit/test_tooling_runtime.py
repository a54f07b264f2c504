"""The tool runtime's guards, each path with a real ledger file and real breakers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field
from structlog.testing import capture_logs

from voice_agent.chat import ToolCall
from voice_agent.exceptions import ToolReportedError
from voice_agent.tooling import (
    REDACTED,
    BreakerBoard,
    ToolContext,
    ToolSpec,
    tool,
)
from voice_agent.tooling.testing import ToolBench


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `predicate()` holds, polling, for at most `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # a breaker's cool-down is a clock, not an event
            await asyncio.sleep(0.01)


class Counter:
    """Counts the runs of a tool made with `counting_tool`."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []


def lookup_tool(counter: Counter) -> ToolSpec:
    @tool(fallback="the status page")
    async def lookup(
        ctx: ToolContext,
        *,
        order: Annotated[int, Field(ge=1, le=5)],
        note: Annotated[str, Field(max_length=20)] = "",
    ) -> dict[str, Any]:
        """Look up an order."""
        counter.runs.append({"order": order, "key": ctx.idempotency_key})
        return {"order": order, "state": "shipped"}

    return lookup


def ticket_tool(counter: Counter) -> ToolSpec:
    @tool(destructive=True, confirm="Open a {priority} ticket titled '{title}'?")
    async def open_ticket(
        ctx: ToolContext, *, title: str, priority: Literal["low", "high"] = "low"
    ) -> dict[str, Any]:
        """Open a ticket."""
        counter.runs.append({"title": title})
        return {"ticket": f"T-{len(counter.runs)}"}

    return open_ticket


async def test_unknown_tool_is_refused_and_audited(tmp_path: Path) -> None:
    """A tool that does not exist is refused; the model is told; one audit record says why."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        result = await bench.run("delete_everything", confirm=True)
    assert result.outcome == "refused"
    content = json.loads(result.content)
    assert content["ok"] is False
    assert "delete_everything" in content["message"]
    assert [a.outcome for a in bench.audit] == ["refused"]
    assert bench.audit[0].error == "unknown tool"
    assert bench.audit[0].arguments == {"confirm": True}


async def test_registered_but_not_allowed_tool_is_refused_and_hidden(tmp_path: Path) -> None:
    """A registered tool missing from the allowlist is neither shown to the model nor run."""
    counter = Counter()
    spec = lookup_tool(counter)
    async with ToolBench.create(spec, data_dir=tmp_path, allowed=[]) as bench:
        assert bench.runtime.tool_schemas() == []
        assert bench.runtime.spec_for("lookup") is None
        result = await bench.run("lookup", order=1)
    assert result.outcome == "refused"
    assert counter.runs == []
    assert bench.audit[0].error == "not allowed for this agent"


async def test_tool_schemas_list_allowed_tools_in_openai_format(tmp_path: Path) -> None:
    """The model sees allowed, registered tools, with their JSON schema."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        (schema,) = bench.runtime.tool_schemas()
    assert schema["type"] == "function"
    assert schema["function"]["name"] == "lookup"
    assert schema["function"]["parameters"]["properties"]["order"]["maximum"] == 5


async def test_extra_argument_is_invalid_and_nothing_runs(tmp_path: Path) -> None:
    """An argument the tool does not take is rejected with a message naming it."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        result = await bench.run("lookup", order=1, admin=True)
    assert result.outcome == "invalid"
    assert counter.runs == []
    assert "'admin' is not an argument" in json.loads(result.content)["message"]
    assert bench.audit[0].outcome == "invalid"


async def test_out_of_range_argument_is_invalid_and_nothing_runs(tmp_path: Path) -> None:
    """A value outside the declared range is rejected with pydantic's message."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        result = await bench.run("lookup", order=9)
    assert result.outcome == "invalid"
    assert counter.runs == []
    assert "less than or equal to 5" in json.loads(result.content)["message"]


async def test_arguments_that_are_not_json_are_invalid(tmp_path: Path) -> None:
    """Malformed JSON from the model is refused, not run."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        result = await bench.runtime.run(ToolCall(id="c1", name="lookup", arguments='{"order": '))
    assert result.outcome == "invalid"
    assert counter.runs == []
    assert "not valid JSON" in json.loads(result.content)["message"]


async def test_a_valid_call_runs_with_the_call_context(tmp_path: Path) -> None:
    """A valid call runs once, sees the call's context, and its result goes to the model."""
    seen: list[ToolContext] = []

    @tool
    async def whoami(ctx: ToolContext) -> dict[str, Any]:
        """Say who is calling."""
        seen.append(ctx)
        return {"user": ctx.user_id, "plan": ctx.app_context["plan"]}

    async with ToolBench.create(
        whoami, data_dir=tmp_path, call_id="call-7", app_context={"plan": "gold"}
    ) as bench:
        result = await bench.run("whoami")
    assert result.outcome == "ok"
    assert json.loads(result.content) == {
        "ok": True,
        "result": {"user": "user-test", "plan": "gold"},
    }
    (ctx,) = seen
    assert ctx.call_id == "call-7"
    assert ctx.data_dir == tmp_path
    assert ctx.idempotency_key == bench.audit[0].idempotency_key
    assert bench.audit[0].outcome == "ok"
    assert bench.audit[0].duration_ms is not None


async def test_a_hanging_tool_times_out_and_is_cancelled(tmp_path: Path) -> None:
    """A tool past its time limit is cancelled (it sees CancelledError) and reported as timeout."""
    cancelled = asyncio.Event()

    @tool(timeout=0.2)
    async def hang(ctx: ToolContext) -> str:
        """Never answers."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "unreachable"

    async with ToolBench.create(hang, data_dir=tmp_path) as bench:
        result = await bench.run("hang")
    assert result.outcome == "timeout"
    assert cancelled.is_set()
    assert "did not finish within 0.2 s" in json.loads(result.content)["message"]
    assert bench.audit[0].outcome == "timeout"


async def test_the_default_timeout_applies_to_tools_without_their_own(tmp_path: Path) -> None:
    """A tool with no timeout of its own gets the policy's default."""

    @tool
    async def slow(ctx: ToolContext) -> str:
        """Takes its time."""
        await asyncio.Event().wait()
        return "unreachable"

    async with ToolBench.create(slow, data_dir=tmp_path, default_timeout_s=0.1) as bench:
        result = await bench.run("slow")
    assert result.outcome == "timeout"


async def test_a_raising_tool_is_an_error_without_internals_for_the_model(tmp_path: Path) -> None:
    """An exception in a tool is audited in full, and the model hears only that it failed."""

    @tool(fallback="email support@example.com")
    async def broken(ctx: ToolContext) -> str:
        """Always fails."""
        raise RuntimeError("database password rejected at 10.0.0.5")

    async with ToolBench.create(broken, data_dir=tmp_path) as bench:
        result = await bench.run("broken")
    assert result.outcome == "error"
    assert "10.0.0.5" not in result.content
    assert "email support@example.com" in json.loads(result.content)["tell_user"]
    assert bench.audit[0].error == "RuntimeError: database password rejected at 10.0.0.5"


async def test_a_reported_error_reaches_the_model_and_spares_the_breaker(tmp_path: Path) -> None:
    """ToolReportedError's message goes to the model and is not counted as a failure."""

    @tool
    async def picky(ctx: ToolContext) -> str:
        """Refuses politely."""
        raise ToolReportedError("That account is closed; it cannot be changed.")

    breakers = BreakerBoard(failures=1, cooldown_s=30)
    async with ToolBench.create(picky, data_dir=tmp_path, breakers=breakers) as bench:
        first = await bench.run("picky")
        second = await bench.run("picky")
    assert [first.outcome, second.outcome] == ["error", "error"]
    assert json.loads(first.content)["message"] == "That account is closed; it cannot be changed."
    assert breakers.state("picky") == "closed"


async def test_breaker_opens_after_failures_then_a_probe_closes_it(tmp_path: Path) -> None:
    """N failures open the breaker (no run, fallback offered); after the cool-down a good
    trial run closes it."""
    runs: list[str] = []
    healthy = False

    @tool(fallback="email support@example.com")
    async def flaky(ctx: ToolContext) -> str:
        """Fails until healthy."""
        runs.append("run")
        if not healthy:
            raise ConnectionError("backend down")
        return "fine"

    breakers = BreakerBoard(failures=3, cooldown_s=0.3)
    async with ToolBench.create(
        flaky, data_dir=tmp_path, breakers=breakers, max_calls_per_turn=10
    ) as bench:
        outcomes = [(await bench.run("flaky")).outcome for _ in range(3)]
        assert outcomes == ["error"] * 3
        assert breakers.state("flaky") == "open"

        blocked = await bench.run("flaky")
        assert blocked.outcome == "breaker_open"
        assert len(runs) == 3
        content = json.loads(blocked.content)
        assert "unavailable" in content["message"]
        assert "email support@example.com" in content["tell_user"]

        await eventually(lambda: breakers.state("flaky") == "half_open")
        healthy = True
        probe = await bench.run("flaky")
    assert probe.outcome == "ok"
    assert len(runs) == 4
    assert breakers.state("flaky") == "closed"
    assert [a.outcome for a in bench.audit] == ["error"] * 3 + ["breaker_open", "ok"]


async def test_timeouts_count_towards_the_breaker(tmp_path: Path) -> None:
    """A tool that keeps timing out opens its breaker like one that raises."""

    @tool(timeout=0.05)
    async def stuck(ctx: ToolContext) -> str:
        """Never answers."""
        await asyncio.Event().wait()
        return "unreachable"

    breakers = BreakerBoard(failures=2, cooldown_s=30)
    async with ToolBench.create(stuck, data_dir=tmp_path, breakers=breakers) as bench:
        outcomes = [(await bench.run("stuck")).outcome for _ in range(3)]
    assert outcomes == ["timeout", "timeout", "breaker_open"]


async def test_invalid_arguments_do_not_count_towards_the_breaker(tmp_path: Path) -> None:
    """The model's mistakes say nothing about the tool's system."""
    counter = Counter()
    breakers = BreakerBoard(failures=1, cooldown_s=30)
    async with ToolBench.create(
        lookup_tool(counter), data_dir=tmp_path, breakers=breakers
    ) as bench:
        await bench.run("lookup", order=0)
        result = await bench.run("lookup", order=1)
    assert result.outcome == "ok"


async def test_destructive_tool_declined_does_nothing(tmp_path: Path) -> None:
    """The user declines: nothing runs, the model hears it, the audit says declined."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=["declined"]
    ) as bench:
        result = await bench.run("open_ticket", title="VPN down", priority="high")
    assert result.outcome == "declined"
    assert counter.runs == []
    assert "declined" in json.loads(result.content)["message"]
    assert bench.audit[0].confirmation == "declined"
    (request,) = bench.confirmer.requests
    assert request.prompt == "Open a high ticket titled 'VPN down'?"
    assert request.tool == "open_ticket"
    assert request.tool_call_id == "call_1"


async def test_destructive_tool_confirmed_runs(tmp_path: Path) -> None:
    """The user confirms: the tool runs once and the audit records the confirmation."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=["confirmed"]
    ) as bench:
        result = await bench.run("open_ticket", title="VPN down")
    assert result.outcome == "ok"
    assert result.result == {"ticket": "T-1"}
    assert bench.audit[0].confirmation == "confirmed"


async def test_destructive_tool_unanswered_counts_as_declined(tmp_path: Path) -> None:
    """No answer within the confirmation time limit: declined, with confirmation "timeout"."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=[None], confirm_timeout_s=0.1
    ) as bench:
        result = await bench.run("open_ticket", title="VPN down")
    assert result.outcome == "declined"
    assert counter.runs == []
    assert "did not confirm in time" in json.loads(result.content)["message"]
    assert bench.audit[0].confirmation == "timeout"


async def test_a_declined_request_may_be_asked_again(tmp_path: Path) -> None:
    """Declining releases the idempotency claim: the same request can later be confirmed."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=["declined", "confirmed"]
    ) as bench:
        first = await bench.run("open_ticket", title="VPN down")
        second = await bench.run("open_ticket", title="VPN down")
    assert [first.outcome, second.outcome] == ["declined", "ok"]
    assert len(counter.runs) == 1


async def test_the_same_call_repeated_runs_once(tmp_path: Path) -> None:
    """A repeat of a request that ran returns the stored result as a duplicate; no second run,
    no second confirmation."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=["confirmed"]
    ) as bench:
        first = await bench.run("open_ticket", title="VPN down", priority="high")
        again = await bench.run("open_ticket", priority="high", title="VPN down")
    assert first.outcome == "ok"
    assert again.outcome == "duplicate"
    assert again.result == first.result
    assert json.loads(again.content)["result"] == first.result
    assert len(counter.runs) == 1
    assert len(bench.confirmer.requests) == 1
    assert bench.audit[1].idempotency_key == bench.audit[0].idempotency_key


async def test_a_repeat_in_another_call_is_a_new_request(tmp_path: Path) -> None:
    """The derived key includes the call id: the same arguments in another call run again."""
    counter = Counter()
    first = ToolBench.create(lookup_tool(counter), data_dir=tmp_path, call_id="a")
    second = ToolBench.create(lookup_tool(counter), data_dir=tmp_path, call_id="b")
    async with first, second:
        assert (await first.run("lookup", order=2)).outcome == "ok"
        assert (await second.run("lookup", order=2)).outcome == "ok"
    assert len(counter.runs) == 2


async def test_a_repeat_across_runtimes_sharing_a_ledger_file_runs_once(tmp_path: Path) -> None:
    """Two runtimes (as two workers would) with their own ledger on one file: one run."""
    counter = Counter()
    one = ToolBench.create(lookup_tool(counter), data_dir=tmp_path, call_id="call-1")
    two = ToolBench.create(lookup_tool(counter), data_dir=tmp_path, call_id="call-1")
    async with one, two:
        first = await one.run("lookup", order=3)
        second = await two.run("lookup", order=3)
    assert first.outcome == "ok"
    assert second.outcome == "duplicate"
    assert second.result == first.result
    assert len(counter.runs) == 1


async def test_a_repeat_after_the_ledger_is_reopened_runs_once(tmp_path: Path) -> None:
    """The ledger is durable: a restarted runtime still knows the request ran."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        first = await bench.run("lookup", order=4)
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as restarted:
        again = await restarted.run("lookup", order=4)
    assert again.outcome == "duplicate"
    assert again.result == first.result
    assert len(counter.runs) == 1


async def test_a_repeat_while_the_first_still_runs_is_not_started(tmp_path: Path) -> None:
    """A concurrent repeat of a running request is a duplicate ("in progress"), not a 2nd run."""
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @tool
    async def slow_write(ctx: ToolContext, *, n: int) -> int:
        """Writes slowly."""
        runs.append(n)
        started.set()
        await release.wait()
        return n

    async with ToolBench.create(slow_write, data_dir=tmp_path) as bench:
        first = asyncio.create_task(bench.run("slow_write", n=1))
        await asyncio.wait_for(started.wait(), 5)
        second = await bench.run("slow_write", n=1)
        release.set()
        done = await first
    assert second.outcome == "duplicate"
    assert second.result is None
    assert "already being carried out" in json.loads(second.content)["message"]
    assert done.outcome == "ok"
    assert runs == [1]


async def test_a_failed_run_may_be_retried(tmp_path: Path) -> None:
    """A run that raised releases its claim, so the same request runs again."""
    attempts: list[int] = []

    @tool
    async def once_broken(ctx: ToolContext) -> str:
        """Fails the first time."""
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("blip")
        return "done"

    async with ToolBench.create(once_broken, data_dir=tmp_path) as bench:
        outcomes = [(await bench.run("once_broken")).outcome for _ in range(2)]
    assert outcomes == ["error", "ok"]


async def test_supplied_idempotency_key_is_shared_across_calls(tmp_path: Path) -> None:
    """A tool taking `idempotency_key` dedupes on it, whatever the call."""
    runs: list[str] = []

    @tool
    async def pay(ctx: ToolContext, *, amount: int, idempotency_key: str) -> str:
        """Pay once."""
        runs.append(idempotency_key)
        return "paid"

    one = ToolBench.create(pay, data_dir=tmp_path, call_id="a")
    two = ToolBench.create(pay, data_dir=tmp_path, call_id="b")
    async with one, two:
        await one.run("pay", amount=5, idempotency_key="inv-9")
        again = await two.run("pay", amount=5, idempotency_key="inv-9")
    assert again.outcome == "duplicate"
    assert runs == ["inv-9"]


async def test_per_turn_limit_stops_a_loop_of_calls(tmp_path: Path) -> None:
    """A model calling tools in a loop is stopped at the per-turn limit; a new turn resets it."""
    counter = Counter()
    async with ToolBench.create(
        lookup_tool(counter), data_dir=tmp_path, max_calls_per_turn=3
    ) as bench:
        outcomes = [(await bench.run("lookup", order=1, note=str(i))).outcome for i in range(5)]
        limited = bench.audit[3]
        assert len(counter.runs) == 3
        bench.runtime.begin_turn(2)
        after = await bench.run("lookup", order=2)
    assert outcomes == ["ok", "ok", "ok", "limit", "limit"]
    assert limited.error == "per-turn limit"
    assert limited.turn == 1
    assert after.outcome == "ok"
    assert bench.audit[5].turn == 2


async def test_per_call_limit_holds_across_turns(tmp_path: Path) -> None:
    """The per-call limit counts every request of the call, whatever the turn."""
    counter = Counter()
    async with ToolBench.create(
        lookup_tool(counter), data_dir=tmp_path, max_calls_per_turn=2, max_calls_per_call=3
    ) as bench:
        results = []
        for turn in range(1, 4):
            bench.runtime.begin_turn(turn)
            for i in range(2):
                results.append(await bench.run("lookup", order=turn, note=str(i)))
    assert [r.outcome for r in results] == ["ok", "ok", "ok", "limit", "limit", "limit"]
    assert len(counter.runs) == 3
    assert bench.audit[3].error == "per-call limit"
    assert "No more tools" in json.loads(results[3].content)["tell_user"]


async def test_refused_and_invalid_requests_count_towards_limits(tmp_path: Path) -> None:
    """A loop of bad calls is stopped too, not only a loop of good ones."""
    counter = Counter()
    async with ToolBench.create(
        lookup_tool(counter), data_dir=tmp_path, max_calls_per_turn=2
    ) as bench:
        outcomes = [(await bench.run("nope")).outcome for _ in range(3)]
    assert outcomes == ["refused", "refused", "limit"]


async def test_secrets_are_redacted_in_audit_confirmation_and_logs(tmp_path: Path) -> None:
    """`secret_args` and secret-looking keys never reach the audit, the prompt or the logs."""
    received: list[str] = []

    @tool(destructive=True, secret_args=["pin"])
    async def transfer(
        ctx: ToolContext, *, to: str, pin: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Move money."""
        received.append(pin)
        return {"done": True, "session_token": "tok-abcdef123456"}

    with capture_logs() as logs:
        async with ToolBench.create(transfer, data_dir=tmp_path, answers=["confirmed"]) as bench:
            result = await bench.run(
                "transfer", to="savings", pin="4321", options={"api_key": "sk-live-0123456789"}
            )
    assert result.outcome == "ok"
    assert received == ["4321"]
    audit = bench.audit[0]
    assert audit.arguments == {"to": "savings", "pin": REDACTED, "options": {"api_key": REDACTED}}
    assert audit.result == {"done": True, "session_token": REDACTED}
    request = bench.confirmer.requests[0]
    assert "4321" not in request.prompt
    assert request.arguments["pin"] == REDACTED
    text = json.dumps(logs, default=str) + audit.model_dump_json() + request.prompt
    for secret in ("4321", "sk-live-0123456789", "tok-abcdef123456"):
        assert secret not in text


async def test_refused_call_arguments_are_redacted_too(tmp_path: Path) -> None:
    """Arguments of a refused call are audited with secret-looking keys redacted."""
    async with ToolBench.create(data_dir=tmp_path) as bench:
        await bench.run("login", user="ann", password="hunter2hunter2")
    assert bench.audit[0].arguments == {"user": "ann", "password": REDACTED}


async def test_a_large_result_is_truncated_in_the_audit(tmp_path: Path) -> None:
    """The audit keeps a bounded excerpt of a big result; the model still gets a bounded one."""

    @tool
    async def dump(ctx: ToolContext) -> str:
        """Returns a lot."""
        return "x" * 50_000

    async with ToolBench.create(dump, data_dir=tmp_path) as bench:
        result = await bench.run("dump")
    assert result.outcome == "ok"
    assert isinstance(bench.audit[0].result, str)
    assert len(bench.audit[0].result) < 3000
    assert len(result.content) < 7000
    assert "cut short" in result.content


async def test_cancelling_a_running_tool_audits_and_releases_its_claim(tmp_path: Path) -> None:
    """A barge-in cancel propagates, is audited "cancelled", and the request may run again."""
    started = asyncio.Event()
    saw_cancel = asyncio.Event()
    runs: list[int] = []

    @tool(on_interrupt="cancel")
    async def long_job(ctx: ToolContext) -> str:
        """Takes long the first time."""
        runs.append(1)
        if len(runs) == 1:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                saw_cancel.set()
                raise
        return "done"

    async with ToolBench.create(long_job, data_dir=tmp_path) as bench:
        task = asyncio.create_task(bench.run("long_job"))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await bench.run("long_job")
    assert saw_cancel.is_set()
    assert [a.outcome for a in bench.audit] == ["cancelled", "ok"]
    assert again.outcome == "ok"
    assert len(runs) == 2


async def test_cancelling_while_waiting_for_confirmation_runs_nothing(tmp_path: Path) -> None:
    """A barge-in during the confirmation wait cancels the request; nothing runs."""
    counter = Counter()
    async with ToolBench.create(
        ticket_tool(counter), data_dir=tmp_path, answers=[None], confirm_timeout_s=30
    ) as bench:
        task = asyncio.create_task(bench.run("open_ticket", title="VPN down"))
        await asyncio.wait_for(bench.confirmer.asked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert counter.runs == []
    assert [a.outcome for a in bench.audit] == ["cancelled"]


async def test_skip_audits_a_call_that_never_runs(tmp_path: Path) -> None:
    """A call from an interrupted generation is audited "skipped" and runs nothing."""
    counter = Counter()
    async with ToolBench.create(lookup_tool(counter), data_dir=tmp_path) as bench:
        result = bench.runtime.skip(bench.call("lookup", order=1), "generation interrupted")
    assert result.outcome == "skipped"
    assert counter.runs == []
    assert bench.audit[0].outcome == "skipped"
    assert bench.audit[0].error == "generation interrupted"
    assert json.loads(result.content)["ok"] is False


async def test_a_failing_audit_sink_does_not_break_the_call(tmp_path: Path) -> None:
    """An audit callback that raises is logged; the result still comes back."""
    counter = Counter()
    bench = ToolBench.create(lookup_tool(counter), data_dir=tmp_path)

    def broken_sink(entry: object) -> None:
        raise OSError("disk full")

    bench.runtime._audit = broken_sink
    async with bench:
        result = await bench.run("lookup", order=1)
    assert result.outcome == "ok"


async def test_a_request_already_done_is_answered_while_the_breaker_is_open(
    tmp_path: Path,
) -> None:
    """The ledger's stored result wins over an open breaker: nothing runs, nothing is lost."""
    runs: list[str] = []

    @tool
    async def lookup(ctx: ToolContext, *, key: str) -> str:
        """Works for "a", fails for anything else."""
        runs.append(key)
        if key != "a":
            raise ConnectionError("backend down")
        return "value-a"

    breakers = BreakerBoard(failures=1, cooldown_s=30)
    async with ToolBench.create(lookup, data_dir=tmp_path, breakers=breakers) as bench:
        done = await bench.run("lookup", key="a")
        failed = await bench.run("lookup", key="b")
        assert breakers.state("lookup") == "open"
        again = await bench.run("lookup", key="a")
        other = await bench.run("lookup", key="c")
    assert [done.outcome, failed.outcome, again.outcome, other.outcome] == [
        "ok",
        "error",
        "duplicate",
        "breaker_open",
    ]
    assert again.result == "value-a"
    assert runs == ["a", "b"]
