"""The idempotency ledger: claims, results, releases, durability and stale claims."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from voice_agent.tooling import IdempotencyLedger, LedgerBusy, LedgerClaim, LedgerDone


async def test_a_completed_key_returns_its_result(tmp_path: Path) -> None:
    """After completion every claim of the key gets the stored result."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        claim = await ledger.claim("k1", tool="t", call_id="c")
        assert isinstance(claim, LedgerClaim)
        await ledger.complete(claim, {"ticket": "T-1", "n": [1, 2]})
        assert await ledger.claim("k1", tool="t", call_id="c") == LedgerDone(
            "k1", {"ticket": "T-1", "n": [1, 2]}
        )


async def test_a_held_key_is_busy(tmp_path: Path) -> None:
    """While a run holds the key, another claim is told it is busy."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        assert isinstance(await ledger.claim("k1", tool="t", call_id="c"), LedgerClaim)
        assert await ledger.claim("k1", tool="t", call_id="c") == LedgerBusy("k1")


async def test_a_released_key_may_be_claimed_again(tmp_path: Path) -> None:
    """A failed run's release lets the request be retried."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        claim = await ledger.claim("k1", tool="t", call_id="c")
        assert isinstance(claim, LedgerClaim)
        await ledger.release(claim.key, claim.token)
        assert isinstance(await ledger.claim("k1", tool="t", call_id="c"), LedgerClaim)


async def test_release_with_another_token_changes_nothing(tmp_path: Path) -> None:
    """Only the claim's owner can release it."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        await ledger.claim("k1", tool="t", call_id="c")
        await ledger.release("k1", "someone-else")
        assert await ledger.lookup("k1") == LedgerBusy("k1")


async def test_release_never_undoes_a_completed_key(tmp_path: Path) -> None:
    """A late release after completion keeps the result."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        claim = await ledger.claim("k1", tool="t", call_id="c")
        assert isinstance(claim, LedgerClaim)
        await ledger.complete(claim, "done")
        await ledger.release(claim.key, claim.token)
        assert await ledger.lookup("k1") == LedgerDone("k1", "done")


async def test_results_survive_reopening_the_file(tmp_path: Path) -> None:
    """The ledger is a file: a new process sees what ran before."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        claim = await ledger.claim("k1", tool="t", call_id="c")
        assert isinstance(claim, LedgerClaim)
        await ledger.complete(claim, 42)
    async with IdempotencyLedger.in_data_dir(tmp_path) as reopened:
        assert await reopened.claim("k1", tool="t", call_id="c") == LedgerDone("k1", 42)


async def test_two_ledgers_on_one_file_see_each_others_claims(tmp_path: Path) -> None:
    """Two workers on one host share the file; a claim in one is busy in the other."""
    one, two = IdempotencyLedger.in_data_dir(tmp_path), IdempotencyLedger.in_data_dir(tmp_path)
    async with one, two:
        assert isinstance(await one.claim("k1", tool="t", call_id="c"), LedgerClaim)
        assert await two.claim("k1", tool="t", call_id="c") == LedgerBusy("k1")


async def test_a_stale_claim_is_taken_over(tmp_path: Path) -> None:
    """A claim left by a process that died mid-run does not block the key forever."""
    path = tmp_path / "ledger.sqlite3"
    async with IdempotencyLedger(path=path) as ledger:
        await ledger.claim("k1", tool="t", call_id="c")
    db = sqlite3.connect(path)
    db.execute("UPDATE tool_ledger SET claimed_at = claimed_at - 3600")
    db.commit()
    db.close()
    async with IdempotencyLedger(path=path, stale_after_s=600) as ledger:
        assert isinstance(await ledger.claim("k1", tool="t", call_id="c2"), LedgerClaim)


async def test_the_ledger_file_uses_wal(tmp_path: Path) -> None:
    """Readers never wait for a writer: the journal mode is WAL."""
    async with IdempotencyLedger.in_data_dir(tmp_path) as ledger:
        await ledger.lookup("k")
        path = ledger.path
    assert path is not None
    db = sqlite3.connect(path)
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    db.close()
    assert mode == "wal"
