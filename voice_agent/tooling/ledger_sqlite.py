"""The ledger's SQLite backend: one file on this host (WAL), shared by the workers that use it.

Every operation is one short transaction run on the ledger's own single thread: operations keep
their order (a release queued after a claim always runs after it, even when the claiming task was
cancelled mid-await) and the event loop never blocks on the disk. Times are this host's clock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from voice_agent.sqlite_wal import enable_wal
from voice_agent.tooling.ledger import ClaimOutcome, LedgerBusy, LedgerClaim, LedgerDone

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_ledger (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    token TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    completed_at REAL,
    result TEXT
)
"""


class SQLiteLedger:
    """The `LedgerBackend` in a SQLite file."""

    name = "sqlite"

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tool-ledger")
        self._db: sqlite3.Connection | None = None  # used only on the executor's thread

    async def claim(
        self, key: str, *, tool: str, call_id: str, token: str, stale_after_s: float
    ) -> ClaimOutcome:
        return await self._run(lambda db: _claim(db, key, tool, call_id, token, stale_after_s))

    async def complete(self, claim: LedgerClaim, result: str) -> None:
        await self._run(lambda db: _complete(db, claim, result))

    async def release(self, key: str, token: str) -> None:
        await self._run(lambda db: _release(db, key, token))

    async def lookup(self, key: str) -> LedgerDone | LedgerBusy | None:
        return await self._run(lambda db: _lookup(db, key))

    async def aclose(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._executor.shutdown(wait=False)

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: op(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            enable_wal(db, timeout_s=10.0)
            db.execute(_SCHEMA)
            self._db = db
        return self._db


def _claim(
    db: sqlite3.Connection, key: str, tool: str, call_id: str, token: str, stale_after_s: float
) -> ClaimOutcome:
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute(
            "SELECT state, claimed_at, result FROM tool_ledger WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO tool_ledger (key, tool, call_id, state, token, claimed_at) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                (key, tool, call_id, token, now),
            )
            outcome: ClaimOutcome = LedgerClaim(key, token)
        elif row[0] == "done":
            outcome = LedgerDone(key, json.loads(row[2]))
        elif now - row[1] > stale_after_s:  # its owner died mid-run
            db.execute(
                "UPDATE tool_ledger SET token = ?, claimed_at = ?, call_id = ? WHERE key = ?",
                (token, now, call_id, key),
            )
            outcome = LedgerClaim(key, token)
        else:
            outcome = LedgerBusy(key)
        db.execute("COMMIT")
        return outcome
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _complete(db: sqlite3.Connection, claim: LedgerClaim, result: str) -> None:
    db.execute(
        "UPDATE tool_ledger SET state = 'done', result = ?, completed_at = ? "
        "WHERE key = ? AND token = ?",
        (result, time.time(), claim.key, claim.token),
    )


def _release(db: sqlite3.Connection, key: str, token: str) -> None:
    db.execute(
        "DELETE FROM tool_ledger WHERE key = ? AND token = ? AND state = 'running'",
        (key, token),
    )


def _lookup(db: sqlite3.Connection, key: str) -> LedgerDone | LedgerBusy | None:
    row = db.execute("SELECT state, result FROM tool_ledger WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    return LedgerDone(key, json.loads(row[1])) if row[0] == "done" else LedgerBusy(key)
