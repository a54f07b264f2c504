"""The idempotency ledger on real PostgreSQL: one table shared by workers on different hosts."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import make_settings
from voice_agent.tooling import (
    IdempotencyLedger,
    LedgerBusy,
    LedgerClaim,
    LedgerDone,
    ToolContext,
    ToolSpec,
    tool,
)
from voice_agent.tooling.testing import ToolBench

STEP_S = 15.0


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def refund_tool(runs: list[int], release: asyncio.Event, started: asyncio.Event) -> ToolSpec:
    """A tool that counts its runs and holds each run until `release` is set."""

    @tool()
    async def refund(ctx: ToolContext, *, order: int) -> dict[str, Any]:
        """Refund an order."""
        runs.append(order)
        started.set()
        await release.wait()
        return {"refund": f"R-{order}"}

    return refund


async def test_two_runtimes_on_one_database_run_a_concurrent_request_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """The same request sent to two workers at once (own ledgers, one database) runs once."""
    runs: list[int] = []
    release, started = asyncio.Event(), asyncio.Event()
    call_id = f"call-{uuid.uuid4().hex}"
    benches = [
        ToolBench.create(
            refund_tool(runs, release, started),
            data_dir=tmp_path / name,
            call_id=call_id,
            ledger=IdempotencyLedger(database_url=postgres_url),
            default_timeout_s=STEP_S,
        )
        for name in ("host-a", "host-b")
    ]
    async with benches[0], benches[1]:
        tasks = [asyncio.create_task(b.run("refund", order=7)) for b in benches]
        async with asyncio.timeout(STEP_S):
            await started.wait()
            # The request that lost the claim answers at once, while the winner still runs.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        [loser] = done
        release.set()
        async with asyncio.timeout(STEP_S):
            results = await asyncio.gather(*tasks)
    assert runs == [7]
    assert loser.result().outcome == "duplicate"
    assert sorted(r.outcome for r in results) == ["duplicate", "ok"]


async def test_many_ledgers_claiming_one_key_at_once_give_it_to_exactly_one(
    postgres_url: str,
) -> None:
    """Twenty concurrent claims from four ledgers: one claim, the rest see the key busy."""
    key = new_key()
    ledgers = [IdempotencyLedger(database_url=postgres_url) for _ in range(4)]
    try:
        outcomes = await asyncio.gather(
            *(ledgers[i % 4].claim(key, tool="t", call_id="c") for i in range(20))
        )
    finally:
        await asyncio.gather(*(ledger.aclose() for ledger in ledgers))
    assert sum(isinstance(o, LedgerClaim) for o in outcomes) == 1
    assert sum(o == LedgerBusy(key) for o in outcomes) == 19


async def test_a_result_stored_by_a_process_that_exited_answers_the_repeat(
    postgres_url: str, tmp_path: Path
) -> None:
    """A worker that ran the tool exits; the retry in a new process gets its result, no rerun."""
    call_id = f"call-{uuid.uuid4().hex}"
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from voice_agent.tooling import IdempotencyLedger, ToolContext, tool
        from voice_agent.tooling.testing import ToolBench

        @tool()
        async def refund(ctx: ToolContext, *, order: int) -> dict:
            \"\"\"Refund an order.\"\"\"
            return {"refund": f"R-{order}", "by": "first process"}

        async def main() -> None:
            ledger = IdempotencyLedger(database_url=sys.argv[1])
            async with ToolBench.create(
                refund, data_dir=Path(sys.argv[2]), call_id=sys.argv[3], ledger=ledger
            ) as bench:
                print((await bench.run("refund", order=7)).outcome)

        asyncio.run(main())
        """
    )
    first = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", script, postgres_url, str(tmp_path), call_id),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await first.communicate()
    assert first.returncode == 0, output.decode()
    assert output.decode().splitlines()[-1] == "ok"  # the last line; log lines come before

    runs: list[int] = []
    release, started = asyncio.Event(), asyncio.Event()
    release.set()
    async with ToolBench.create(
        refund_tool(runs, release, started),
        data_dir=tmp_path,
        call_id=call_id,
        ledger=IdempotencyLedger(database_url=postgres_url),
    ) as bench:
        repeat = await bench.run("refund", order=7)
    assert repeat.outcome == "duplicate"
    assert repeat.result == {"refund": "R-7", "by": "first process"}
    assert runs == []


async def test_a_release_after_a_cancelled_claim_still_frees_the_key(postgres_url: str) -> None:
    """A claim cancelled mid-await finishes before its release runs: no claim is left behind."""
    async with IdempotencyLedger(database_url=postgres_url) as ledger:
        key, token = new_key(), ledger.new_token()
        claiming = asyncio.create_task(ledger.claim(key, tool="t", call_id="c", token=token))
        await asyncio.sleep(0)  # the claim is under way
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        await ledger.release(key, token)
    # Closed: every operation it accepted has finished. Another worker finds the key free.
    async with IdempotencyLedger(database_url=postgres_url) as other:
        assert await other.lookup(key) is None


async def test_a_released_key_on_postgres_may_be_claimed_again(postgres_url: str) -> None:
    """A failed run's release lets another worker retry the request."""
    key = new_key()
    async with (
        IdempotencyLedger(database_url=postgres_url) as one,
        IdempotencyLedger(database_url=postgres_url) as two,
    ):
        claim = await one.claim(key, tool="t", call_id="c")
        assert isinstance(claim, LedgerClaim)
        assert await two.claim(key, tool="t", call_id="c") == LedgerBusy(key)
        await one.release(claim.key, claim.token)
        assert isinstance(await two.claim(key, tool="t", call_id="c"), LedgerClaim)


async def test_a_stale_claim_on_postgres_is_taken_over_by_another_worker(
    postgres_url: str,
) -> None:
    """A claim left by a worker that died mid-run is taken over once it is stale."""
    key = new_key()
    async with IdempotencyLedger(database_url=postgres_url) as dead:
        await dead.claim(key, tool="t", call_id="c")
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "UPDATE tool_ledger SET claimed_at = claimed_at - 3600 WHERE key = $1", key
        )
    finally:
        await conn.close()
    async with IdempotencyLedger(database_url=postgres_url, stale_after_s=600) as alive:
        claim = await alive.claim(key, tool="t", call_id="c2")
        assert isinstance(claim, LedgerClaim)
        await alive.complete(claim, {"n": 1})
        assert await alive.claim(key, tool="t", call_id="c3") == LedgerDone(key, {"n": 1})


def test_the_ledger_follows_the_database_url(tmp_path: Path) -> None:
    """PostgreSQL when the database URL names it; the data dir's SQLite file otherwise."""
    pg = IdempotencyLedger.from_settings(
        make_settings(database_url="postgresql://u@127.0.0.1:1/db", data_dir=tmp_path)
    )
    sqlite_url = f"sqlite:///{tmp_path / 'reports.sqlite3'}"
    lite = IdempotencyLedger.from_settings(
        make_settings(database_url=sqlite_url, data_dir=tmp_path)
    )
    default = IdempotencyLedger.from_settings(make_settings(data_dir=tmp_path))
    assert (pg.backend, pg.path) == ("postgresql", None)
    assert (lite.backend, lite.path) == ("sqlite", tmp_path / "tool_ledger.sqlite3")
    assert default.backend == "sqlite"
